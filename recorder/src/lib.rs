//! gemfleet recorder
pub mod slack_bridge;
