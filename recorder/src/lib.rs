//! gemfleet recorder
