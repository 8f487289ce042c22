//! The one write path's directory: which [`DeviceWriter`] serves a tag, by the tag's source
//! (`TagMeta::device`: a Modbus device id, `sparkplug:<group>/<node>[/<device>]`).
//!
//! Each connector registers its writer for the sources it owns when it starts them (the Modbus
//! sources (`ModbusSource` when the supervisor starts it), the Sparkplug host for every node or device whose birth
//! creates tags), so the runtime's `Runtime::write` is one lookup and one call whatever the protocol.
//!
//! Invariant: a source has one writer. A second connector cannot take over a source another
//! one registered (the same writer registering again is a no-op), just as a Sparkplug metric
//! cannot take over a configured tag's path.

use std::collections::HashMap;
use std::sync::Arc;

use crate::component::DeviceWriter;
use parking_lot::RwLock;

/// A source is already served by another writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source {source_id:?} already has a writer; a second connector cannot write to it")]
pub struct SourceTaken {
    pub source_id: String,
}

/// Writers by source; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Writers {
    by_source: Arc<RwLock<HashMap<String, Arc<dyn DeviceWriter>>>>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sources: Vec<String> = self.by_source.read().keys().cloned().collect();
        sources.sort();
        f.debug_struct("Writers")
            .field("sources", &sources)
            .finish()
    }
}

impl Writers {
    pub fn new() -> Writers {
        Writers::default()
    }

    /// Makes `writer` the writer of `source`. Registering the same writer (the same `Arc`) again
    /// succeeds; another writer for a registered source is refused.
    pub fn register(&self, source: &str, writer: Arc<dyn DeviceWriter>) -> Result<(), SourceTaken> {
        if let Some(existing) = self.by_source.read().get(source) {
            return same(existing, &writer)
                .then_some(())
                .ok_or_else(|| SourceTaken {
                    source_id: source.to_owned(),
                });
        }
        let mut map = self.by_source.write();
        match map.get(source) {
            Some(existing) if !same(existing, &writer) => Err(SourceTaken {
                source_id: source.to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                map.insert(source.to_owned(), writer);
                Ok(())
            }
        }
    }

    /// The writer of `source`, if a connector registered one.
    pub fn get(&self, source: &str) -> Option<Arc<dyn DeviceWriter>> {
        self.by_source.read().get(source).cloned()
    }

    /// How many sources have a writer.
    pub fn len(&self) -> usize {
        self.by_source.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether two writers are the same object (compares data pointers, not vtables, which may
/// differ between codegen units for one type).
fn same(a: &Arc<dyn DeviceWriter>, b: &Arc<dyn DeviceWriter>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxFuture, DeviceWriteError, TagMeta, Value, WriteAck};

    struct Fixed(&'static str);

    impl DeviceWriter for Fixed {
        fn write(
            &self,
            _tag: &TagMeta,
            _value: Value,
        ) -> BoxFuture<'static, Result<WriteAck, DeviceWriteError>> {
            let detail = self.0.to_owned();
            Box::pin(async move {
                Ok(WriteAck {
                    detail,
                    echoed: None,
                })
            })
        }
    }

    #[test]
    fn a_source_keeps_its_first_writer() {
        let writers = Writers::new();
        let a: Arc<dyn DeviceWriter> = Arc::new(Fixed("a"));
        let b: Arc<dyn DeviceWriter> = Arc::new(Fixed("b"));
        writers.register("plc1", a.clone()).expect("first");
        writers
            .register("plc1", a.clone())
            .expect("same writer again");
        assert_eq!(
            writers.register("plc1", b.clone()),
            Err(SourceTaken {
                source_id: "plc1".into()
            })
        );
        writers
            .register("sparkplug:g/n", b)
            .expect("another source");
        assert_eq!(writers.len(), 2);
        let got = writers.get("plc1").expect("registered");
        assert!(same(&got, &a));
        assert!(writers.get("plc2").is_none());
    }
}
