//! State kept across restarts by the platform's own state machines (alarms, commands): a
//! snapshot written atomically by one service, as soon as the state changed, then at most once
//! a [`SAVE_EVERY`] however many changes happen, and at shutdown.

use std::sync::Arc;
use std::time::Duration;

use ironplant_control::alarm::persist::PersistError;
use ironplant_core::{BoxFuture, ComponentError, Shutdown};
use tokio::sync::Notify;

use crate::component::Service;

/// Moves a saved state that cannot be used out of the way (`<file>.corrupt-<µs>`, kept for a
/// post-mortem, never overwritten by the next save) and says where it went, for the event that
/// reports the loss.
pub fn set_aside(file: &std::path::Path, now: ironplant_core::Timestamp) -> String {
    let aside = file.with_extension(format!("corrupt-{}", now.as_micros()));
    match std::fs::rename(file, &aside) {
        Ok(()) => format!("moved to {}", aside.display()),
        Err(m) => format!("left in place (cannot move it: {m})"),
    }
}

/// The longest a changed state waits before it is written to disk.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A state machine whose snapshot the platform keeps on disk.
pub trait SavedState: Send + Sync + 'static {
    /// What it is, for logs and the service's name, e.g. `alarm`.
    fn what(&self) -> &'static str;
    /// Notified on every change.
    fn changes(&self) -> &Notify;
    /// Writes the snapshot if it changed since the last write (blocking).
    fn save(&self) -> Result<(), PersistError>;
    /// The longest a change waits before it is written.
    fn save_every(&self) -> Duration {
        SAVE_EVERY
    }
}

/// The service that saves a [`SavedState`]; see the module docs.
pub struct StatePersister<S>(pub Arc<S>);

impl<S: SavedState> Service for StatePersister<S> {
    fn name(&self) -> String {
        format!("{}-state", self.0.what())
    }

    fn run(
        self: Arc<Self>,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let what = self.0.what();
            loop {
                let stop = tokio::select! {
                    () = self.0.changes().notified() => false,
                    () = shutdown.requested() => true,
                };
                let state = self.0.clone();
                let saved = tokio::task::spawn_blocking(move || state.save())
                    .await
                    .map_err(|e| {
                        ComponentError::new(format!("the {what} state writer panicked: {e}"))
                    })?;
                if let Err(e) = saved {
                    // Reported and retried: the state stays in memory meanwhile.
                    tracing::error!(error = %e, "cannot save the {what} state");
                    if stop {
                        return Err(ComponentError::new(format!(
                            "cannot save the {what} state at shutdown: {e}"
                        )));
                    }
                }
                if stop {
                    return Ok(());
                }
                // Coalesce: one write per period however many changes happen.
                tokio::select! {
                    () = tokio::time::sleep(self.0.save_every()) => {}
                    () = shutdown.requested() => {}
                }
            }
        })
    }
}
