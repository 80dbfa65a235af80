//! gemfleet emulator
