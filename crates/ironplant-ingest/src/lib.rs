//! Ingest for cheap devices and old data: JSON payloads (MQTT or HTTP) mapped into the Unified
//! Namespace by `[[ingest.json]]` ([`config`], [`json`], [`mqtt`]), and backfill of exported
//! history (CSV, Parquet) into the historian ([`import`]).
//!
//! The mapper is sans-IO ([`JsonIngest`]: payload + `now` in, readings out, counters in
//! [`IngestStats`]); the MQTT shell and the HTTP handler (`ironplant_api::ingest`) are thin.

pub mod config;
pub mod guard;
pub mod import;
pub mod json;
pub mod mqtt;
pub mod time;

pub use config::{IngestSettings, JsonMapping};
pub use json::{FieldError, IngestError, IngestStats, JsonIngest, Mapped, Reading, Reason};
