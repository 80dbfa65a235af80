//! gemfleet testkit
