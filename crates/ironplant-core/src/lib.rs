//! Ironplant core: the types every other crate speaks — tag paths, typed values, quality, samples,
//! assets with locations, the configuration model, and the tag bus every sample travels on.
//!
//! This crate does no I/O: no sockets, no files (the caller reads the config text), no clocks deep
//! inside logic (time is passed in, except [`Timestamp::now`] for callers at the edges).

pub mod asset;
pub mod bus;
pub mod component;
pub mod config;
pub mod event;
pub mod namespace;
pub mod path;
pub mod sample;
pub mod wire;
pub mod writers;

pub use asset::{Asset, AssetLevel, Location};
pub use bus::{Batch, BusStats, Overflow, Stage, Subscription, TagBus, MAX_TAGS};
pub use component::{
    BoxFuture, ComponentError, DeviceWriteError, DeviceWriter, Processor, ProcessorOutput, Service,
    Shutdown, Sink, SinkContext, SinkInput, SinkQueue, Source, SourceContext, WriteAck,
};
pub use event::{Event, EventBus, EventFilter, EventKind, EventSubscription, Severity};
pub use namespace::{LiveNamespace, Namespace, RegisterError, TagId, TagMeta};
pub use path::{PathError, TagPath};
pub use sample::{
    Array, CompositeError, DataSet, Elements, Quality, QualityLevel, QualityReason, Sample,
    ScalarType, Timestamp, Value, ValueType, MAX_ELEMENTS, MAX_TEXT_BYTES,
};
