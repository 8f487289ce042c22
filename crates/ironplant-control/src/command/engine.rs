//! [`CommandPath`]: the state machine every command passes through. Sans-IO: the caller passes
//! the policy's verdict, the tag's current value, the interlocks' states and `now`; the path
//! answers with a [`Decision`], findings ([`Outcome`]) and audit records to write.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ironplant_core::{Quality, TagPath, Timestamp, Value, ValueType, WriteAck};

use super::audit::{AuditRecord, AuditResult};
use super::config::{CommandSettings, InterlockSettings, OnUnauthorisedChange, TagPolicy};
use super::snapshot::{CommandSnapshot, SnapshotError, TagSnapshot};
use super::types::{
    admits, values_match, Accepted, Actor, Authorisation, CommandId, CommandRequest, Decision,
    EnvelopeViolation, InterlockState, Interlocks, Origin, Pending, Refusal, RefusalReason,
    Requester, TagInfo,
};

/// A selection held by a session (select-before-operate).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectToken {
    pub id: CommandId,
    pub tag: TagPath,
    pub session: String,
    /// The value selected with, if any: the operate must carry the same value.
    pub value: Option<Value>,
    pub expires_at: Timestamp,
}

/// Something the caller acts on, found by [`CommandPath::observe`], [`CommandPath::tick`] or
/// [`CommandPath::device_acknowledged`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The device shows the commanded value.
    Verified {
        id: CommandId,
        tag: TagPath,
        value: Value,
        /// From acceptance to the confirming sample or echo.
        after: Duration,
    },
    /// The device did not show the commanded value in time (or echoed another): a failed
    /// command event and an alarm.
    Failed {
        id: CommandId,
        tag: TagPath,
        commanded: Value,
        /// The last value seen (any quality), if any.
        last_seen: Option<Value>,
        why: String,
    },
    /// A two-person command nobody confirmed in time.
    ConfirmationExpired { id: CommandId, refusal: Refusal },
    /// A value no authorised command explains: a security alarm, and a restore to submit if
    /// configured.
    UnauthorisedChange(UnauthorisedChange),
    /// The tag shows its expected value again after an unauthorised change (the alarm may
    /// return to normal; detection is re-armed).
    ChangeReverted { tag: TagPath, value: Value },
}

/// A Good sample showed a value that no authorised command explains.
#[derive(Debug, Clone, PartialEq)]
pub struct UnauthorisedChange {
    pub tag: TagPath,
    /// What the platform expects: the last value it commanded, the configured `expected`, or
    /// the first value it saw.
    pub expected: Value,
    pub seen: Value,
    /// When the changed value was first seen.
    pub since: Timestamp,
    /// Where the expected value comes from.
    pub basis: Basis,
    /// `on_unauthorised_change = "restore"`: the value to write back. Submit
    /// [`CommandRequest::restore`] through [`CommandPath::submit`] like any command.
    pub restore: Option<Value>,
}

/// Where the expected value of a tag comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    /// The last accepted command, made then.
    Commanded { id: CommandId, at: Timestamp },
    /// The `expected` value of the tag's `[[command]]`.
    Configured,
    /// The first Good value seen after start, then (no command since).
    Learned { at: Timestamp },
}

impl CommandRequest {
    /// The platform's own command writing `value` back after an unauthorised change.
    pub fn restore(tag: TagPath, value: Value, info: Option<TagInfo>) -> CommandRequest {
        CommandRequest {
            tag,
            info,
            value,
            requester: Requester::platform(),
            authorisation: Authorisation::Allowed,
            reason: "restore the commanded value after an unauthorised change".to_owned(),
            origin: Origin::Platform,
        }
    }
}

#[derive(Debug, Clone)]
struct Baseline {
    value: Value,
    basis: Basis,
}

#[derive(Debug, Default)]
struct TagState {
    /// Unauthorised changes are detected: the tag is a setpoint by configuration (a `[[tag]]`
    /// declared writable, or a `[[command]]`). A tag writable only because its protocol lets
    /// every value be commanded (a Sparkplug metric) is watched for read-back only: its value
    /// changes by itself (a counter, a measurement), so a change is not a finding.
    detect: bool,
    /// The last accepted command's value (as a number) and time, for max_rate and min_interval.
    last_write: Option<(Option<f64>, Timestamp)>,
    selection: Option<SelectToken>,
    baseline: Option<Baseline>,
    /// The value last reported as an unauthorised change (not reported again until it changes
    /// or detection is re-armed).
    flagged: Option<Value>,
    /// The command in flight (accepted, not yet verified, failed or errored).
    inflight: Option<CommandId>,
    last_seen: Option<Value>,
    /// After a verification by the device's echo, samples of polls made before the write may
    /// still be on their way: until one shows the value the device now has (or this time
    /// passes), a differing sample is taken as stale, not as a change.
    settle_until: Option<Timestamp>,
}

#[derive(Debug)]
enum Stage {
    /// Handed to the device, no answer yet; a matching sample seen meanwhile counts.
    AwaitingDevice {
        matched: Option<Timestamp>,
    },
    Verifying {
        deadline: Timestamp,
    },
}

#[derive(Debug)]
struct Inflight {
    tag: TagPath,
    value: Value,
    accepted_at: Timestamp,
    stage: Stage,
    previous: Option<Baseline>,
    record: AuditRecord,
}

#[derive(Debug)]
struct PendingCommand {
    request: CommandRequest,
    requested_at: Timestamp,
    expires_at: Timestamp,
    record: AuditRecord,
}

/// The command path's state: policies, per-tag state (last write, selection, baseline),
/// pending two-person commands and commands in flight.
#[derive(Debug)]
pub struct CommandPath {
    policies: HashMap<TagPath, TagPolicy>,
    messages: HashMap<String, String>,
    tags: HashMap<TagPath, TagState>,
    pending: BTreeMap<CommandId, PendingCommand>,
    inflight: BTreeMap<CommandId, Inflight>,
    next_id: u64,
    audit: Vec<AuditRecord>,
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
}

fn since(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_micros(u64::try_from(now.0.saturating_sub(then.0)).unwrap_or(0))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CommandPath {
    /// A command path over the configured policies. Tags with a `[[command]]` are watched for
    /// unauthorised changes from the start (with their `expected` value as the baseline, if
    /// given); others once [`CommandPath::watch`]ed or commanded.
    pub fn new(settings: &CommandSettings, interlocks: &InterlockSettings) -> CommandPath {
        let mut tags = HashMap::new();
        for p in &settings.tags {
            let st: &mut TagState = tags.entry(p.tag.clone()).or_default();
            st.detect = true;
            if let Some(v) = &p.expected {
                st.baseline = Some(Baseline {
                    value: v.clone(),
                    basis: Basis::Configured,
                });
            }
        }
        CommandPath {
            policies: settings
                .tags
                .iter()
                .map(|p| (p.tag.clone(), p.clone()))
                .collect(),
            messages: interlocks
                .interlocks
                .iter()
                .map(|i| (i.name.clone(), i.message.clone()))
                .collect(),
            tags,
            pending: BTreeMap::new(),
            inflight: BTreeMap::new(),
            next_id: 1,
            audit: Vec::new(),
        }
    }

    /// Watches a writable tag without a `[[command]]` for unauthorised changes (its first Good
    /// value is learned as the baseline). Call it for every writable tag of the namespace.
    pub fn watch(&mut self, tag: TagPath) {
        self.tags.entry(tag).or_default().detect = true;
    }

    /// Watches a tag that is writable only because its protocol allows commanding any value
    /// (a Sparkplug metric without a `[[command]]`): commands to it are verified by read-back,
    /// but its changes are not unauthorised changes (it may be a measurement). A tag already
    /// watched ([`CommandPath::watch`], a `[[command]]`) keeps its detection.
    pub fn watch_read_back(&mut self, tag: TagPath) {
        self.tags.entry(tag).or_default();
    }

    /// The policy of a tag: its `[[command]]`, or the default one.
    pub fn policy(&self, tag: &TagPath) -> TagPolicy {
        self.policies
            .get(tag)
            .cloned()
            .unwrap_or_else(|| TagPolicy::default_for(tag.clone()))
    }

    /// The audit records made since the last call, oldest first: write them to the audit log
    /// and publish them ([`AuditRecord::to_event`]).
    pub fn drain_audit(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.audit)
    }

    /// The earliest time [`CommandPath::tick`] has something to do (a selection, a pending
    /// confirmation or a verification running out).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let sel = self
            .tags
            .values()
            .filter_map(|t| t.selection.as_ref().map(|s| s.expires_at));
        let pend = self.pending.values().map(|p| p.expires_at);
        let ver = self.inflight.values().filter_map(|i| match i.stage {
            Stage::Verifying { deadline } => Some(deadline),
            Stage::AwaitingDevice { .. } => None,
        });
        sel.chain(pend).chain(ver).min()
    }

    /// Commands handed to the device and not yet verified, failed or errored.
    pub fn in_flight(&self) -> impl Iterator<Item = (CommandId, &TagPath, &Value)> {
        self.inflight.iter().map(|(id, i)| (*id, &i.tag, &i.value))
    }

    /// Two-person commands waiting for their second person.
    pub fn pending(&self) -> Vec<Pending> {
        self.pending
            .iter()
            .map(|(id, p)| self.pending_view(*id, p))
            .collect()
    }

    fn pending_view(&self, id: CommandId, p: &PendingCommand) -> Pending {
        let needs_role = self
            .policy(&p.request.tag)
            .two_person
            .map_or(super::Role::Engineer, |t| t.role);
        Pending {
            id,
            tag: p.request.tag.clone(),
            value: p.request.value.clone(),
            requested_by: p.request.requester.actor.identity(),
            needs_role,
            expires_at: p.expires_at,
        }
    }

    fn new_id(&mut self) -> CommandId {
        let id = CommandId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Decides a command: authorisation, tag, value type, envelope, interlocks,
    /// select-before-operate, two-person rule, in that order; the first that fails is the
    /// refusal. Accepted: write it, then report the device's answer. Every decision is audited.
    pub fn submit(
        &mut self,
        mut req: CommandRequest,
        interlocks: &dyn Interlocks,
        now: Timestamp,
    ) -> Decision {
        let id = self.new_id();
        let policy = self.policy(&req.tag);
        if let Err(reason) = self.check(&mut req, &policy, interlocks, now) {
            return self.refuse(id, &req, now, reason);
        }
        if policy.select_before_operate.is_some() {
            if let Err(reason) = self.check_selection(&req, now) {
                return self.refuse(id, &req, now, reason);
            }
        }
        if let Some(tp) = &policy.two_person {
            match &req.requester.actor {
                Actor::Rule { .. } => {
                    return self.refuse(id, &req, now, RefusalReason::TwoPersonNeedsUsers)
                }
                Actor::Platform => {}
                Actor::User { .. } => {
                    let waiting = self
                        .pending
                        .iter()
                        .find(|(_, p)| p.request.tag == req.tag)
                        .map(|(id, p)| (*id, p.expires_at));
                    if let Some((other, expires_at)) = waiting {
                        if expires_at <= now {
                            self.expire_pending(other, now);
                        } else {
                            let requested_by = self
                                .pending
                                .get(&other)
                                .map(|p| p.request.requester.actor.identity())
                                .unwrap_or_default();
                            let reason = RefusalReason::AlreadyPending {
                                id: other,
                                requested_by,
                                expires_at,
                            };
                            return self.refuse(id, &req, now, reason);
                        }
                    }
                    let expires_at = plus(now, tp.timeout);
                    let record = AuditRecord::from_request(
                        id,
                        &req,
                        now,
                        AuditResult::Pending {
                            needs_role: tp.role.as_str().to_owned(),
                            expires_at,
                        },
                    );
                    self.audit.push(record.clone());
                    let p = PendingCommand {
                        request: req,
                        requested_at: now,
                        expires_at,
                        record,
                    };
                    let view = self.pending_view(id, &p);
                    self.pending.insert(id, p);
                    return Decision::AwaitingConfirmation(view);
                }
            }
        }
        let record = AuditRecord::from_request(id, &req, now, AuditResult::Accepted);
        self.accept(id, req, None, record, now)
    }

    /// Select-before-operate: the requester's session holds the tag until the returned
    /// token's `expires_at`. `req.value` may be `Value::Null` (select without value); with a
    /// value, the value is checked now (type, envelope, interlocks) and the operate must carry
    /// the same. A selection by another live session is refused; the same session selecting
    /// again renews it.
    pub fn select(
        &mut self,
        mut req: CommandRequest,
        interlocks: &dyn Interlocks,
        now: Timestamp,
    ) -> Result<SelectToken, Refusal> {
        let id = self.new_id();
        let policy = self.policy(&req.tag);
        let with_value = req.value != Value::Null;
        let checked = if with_value {
            self.check(&mut req, &policy, interlocks, now)
        } else {
            self.check_access(&req)
        };
        if let Err(reason) = checked {
            return Err(self.refuse_err(id, &req, now, reason));
        }
        let (Actor::User { .. }, Some(session)) = (&req.requester.actor, &req.requester.session)
        else {
            return Err(self.refuse_err(id, &req, now, RefusalReason::NoSession));
        };
        let session = session.clone();
        let st = self.tags.entry(req.tag.clone()).or_default();
        if let Some(held) = &st.selection {
            if held.session != session && held.expires_at > now {
                let reason = RefusalReason::SelectedByAnotherSession {
                    holder: held.session.clone(),
                    expires_at: held.expires_at,
                };
                return Err(self.refuse_err(id, &req, now, reason));
            }
        }
        let expires_at = plus(
            now,
            policy
                .select_before_operate
                .unwrap_or(Duration::from_secs(10)),
        );
        let token = SelectToken {
            id,
            tag: req.tag.clone(),
            session,
            value: with_value.then(|| req.value.clone()),
            expires_at,
        };
        st.selection = Some(token.clone());
        self.audit.push(AuditRecord::from_request(
            id,
            &req,
            now,
            AuditResult::Selected { expires_at },
        ));
        Ok(token)
    }

    /// Cancels the session's selection of the tag; `false` if it held none.
    pub fn cancel_select(
        &mut self,
        tag: &TagPath,
        requester: &Requester,
        origin: Origin,
        now: Timestamp,
    ) -> bool {
        let Some(st) = self.tags.get_mut(tag) else {
            return false;
        };
        let held = st
            .selection
            .as_ref()
            .is_some_and(|s| Some(&s.session) == requester.session.as_ref());
        if !held {
            return false;
        }
        let Some(sel) = st.selection.take() else {
            return false;
        };
        let req = CommandRequest {
            tag: tag.clone(),
            info: None,
            value: sel.value.unwrap_or(Value::Null),
            requester: requester.clone(),
            authorisation: Authorisation::Allowed,
            reason: String::new(),
            origin,
        };
        self.audit.push(AuditRecord::from_request(
            sel.id,
            &req,
            now,
            AuditResult::SelectCancelled,
        ));
        true
    }

    /// Two-person rule: a second person confirms the pending command `id`. The confirmer must
    /// be another user, of the configured role or above, allowed by the policy
    /// (`authorisation`); these refusals leave the command pending. Then the tag's checks run
    /// again on the current state (`info`, `interlocks`: things may have changed since the
    /// request); a refusal there ends the command.
    pub fn confirm(
        &mut self,
        id: CommandId,
        confirmer: &Requester,
        authorisation: &Authorisation,
        info: Option<TagInfo>,
        interlocks: &dyn Interlocks,
        now: Timestamp,
    ) -> Decision {
        let Some(p) = self.pending.get(&id) else {
            return Decision::Refused(Refusal {
                tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                reason: RefusalReason::UnknownPending { id },
            });
        };
        let tag = p.request.tag.clone();
        let policy = self.policy(&tag);
        let needs = policy
            .two_person
            .as_ref()
            .map_or(super::Role::Engineer, |t| t.role);
        if now >= p.expires_at {
            return self.expire_pending(id, now);
        }
        let first = p.request.requester.actor.identity();
        let refusal = match &confirmer.actor {
            Actor::Rule { .. } | Actor::Platform => Some(RefusalReason::TwoPersonNeedsUsers),
            Actor::User { name, .. } if *name == first => {
                Some(RefusalReason::SameUser { user: name.clone() })
            }
            Actor::User { role, .. } if !role.at_least(needs) => {
                Some(RefusalReason::ConfirmerRoleTooLow {
                    role: Some(*role),
                    needs,
                })
            }
            Actor::User { .. } => match authorisation {
                Authorisation::Denied(denial) => Some(RefusalReason::NotAuthorised {
                    identity: confirmer.actor.identity(),
                    denial: denial.clone(),
                }),
                Authorisation::Allowed => None,
            },
        };
        if let Some(reason) = refusal {
            // The command stays pending for the right person; the attempt is audited.
            let record = p
                .record
                .step(
                    now,
                    AuditResult::Refused {
                        code: reason.code().to_owned(),
                        message: reason.to_string(),
                    },
                )
                .with_confirmer(confirmer);
            self.audit.push(record);
            return Decision::Refused(Refusal { tag, reason });
        }
        let Some(p) = self.pending.remove(&id) else {
            return Decision::Refused(Refusal {
                tag,
                reason: RefusalReason::UnknownPending { id },
            });
        };
        let mut req = p.request;
        req.info = info;
        let record_base = p.record.with_confirmer(confirmer);
        if let Err(reason) = self.check(&mut req, &policy, interlocks, now) {
            let record = AuditRecord {
                old_value: current_of(&req),
                ..record_base.step(
                    now,
                    AuditResult::Refused {
                        code: reason.code().to_owned(),
                        message: reason.to_string(),
                    },
                )
            };
            self.audit.push(record);
            return Decision::Refused(Refusal { tag, reason });
        }
        let record = AuditRecord {
            old_value: current_of(&req),
            requested_at: p.requested_at,
            ..record_base.step(now, AuditResult::Accepted)
        };
        self.accept(id, req, Some(confirmer.actor.identity()), record, now)
    }

    /// Two-person rule: a user rejects the pending command `id`, or its requester withdraws
    /// it. Anyone else must be able to confirm it (a user of the configured role or above,
    /// allowed by the policy), so nobody without that right can veto a command. `Ok`: the
    /// refusal that ends the command; `Err`: why this rejection is refused (the command stays
    /// pending).
    pub fn reject(
        &mut self,
        id: CommandId,
        by: &Requester,
        authorisation: &Authorisation,
        now: Timestamp,
    ) -> Result<Refusal, Refusal> {
        let Some(p) = self.pending.get(&id) else {
            return Err(Refusal {
                tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                reason: RefusalReason::UnknownPending { id },
            });
        };
        if now >= p.expires_at {
            return match self.expire_pending(id, now) {
                Decision::Refused(r) => Err(r),
                _ => Err(Refusal {
                    tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                    reason: RefusalReason::UnknownPending { id },
                }),
            };
        }
        let needs = self
            .policy(&p.request.tag)
            .two_person
            .map_or(super::Role::Engineer, |t| t.role);
        let withdraw = by.actor.identity() == p.request.requester.actor.identity();
        let refusal = match &by.actor {
            _ if withdraw => None,
            Actor::Rule { .. } | Actor::Platform => Some(RefusalReason::TwoPersonNeedsUsers),
            Actor::User { role, .. } if !role.at_least(needs) => {
                Some(RefusalReason::ConfirmerRoleTooLow {
                    role: Some(*role),
                    needs,
                })
            }
            Actor::User { .. } => match authorisation {
                Authorisation::Denied(denial) => Some(RefusalReason::NotAuthorised {
                    identity: by.actor.identity(),
                    denial: denial.clone(),
                }),
                Authorisation::Allowed => None,
            },
        };
        if let Some(reason) = refusal {
            let record = p
                .record
                .step(
                    now,
                    AuditResult::Refused {
                        code: reason.code().to_owned(),
                        message: format!(
                            "the rejection by {} is refused: {reason}",
                            by.actor.identity()
                        ),
                    },
                )
                .with_confirmer(by);
            self.audit.push(record);
            return Err(Refusal {
                tag: p.request.tag.clone(),
                reason,
            });
        }
        let Some(p) = self.pending.remove(&id) else {
            return Err(Refusal {
                tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                reason: RefusalReason::UnknownPending { id },
            });
        };
        let reason = RefusalReason::RejectedByConfirmer {
            by: by.actor.identity(),
        };
        let record = p
            .record
            .step(
                now,
                AuditResult::Refused {
                    code: reason.code().to_owned(),
                    message: reason.to_string(),
                },
            )
            .with_confirmer(by);
        self.audit.push(record);
        Ok(Refusal {
            tag: p.request.tag,
            reason,
        })
    }

    /// The device acknowledged the write of command `id`. A matching echo (a Modbus read-back,
    /// the Sparkplug report) or a matching sample seen since acceptance verifies it now; an
    /// echo of another value fails it; otherwise verification runs until the tag's deadline.
    pub fn device_acknowledged(
        &mut self,
        id: CommandId,
        ack: &WriteAck,
        now: Timestamp,
    ) -> Option<Outcome> {
        let tolerance = {
            let i = self.inflight.get(&id)?;
            self.policy(&i.tag).verify.tolerance
        };
        let timeout = {
            let i = self.inflight.get(&id)?;
            self.policy(&i.tag).verify.timeout
        };
        let i = self.inflight.get_mut(&id)?;
        let matched = match i.stage {
            Stage::AwaitingDevice { matched } => matched,
            Stage::Verifying { .. } => None,
        };
        if let Some(echoed) = &ack.echoed {
            let tag = i.tag.clone();
            let outcome = if values_match(echoed, &i.value, tolerance) {
                let seen = echoed.clone();
                self.verified(id, seen, now)
            } else {
                let why = format!(
                    "the device echoed {echoed} after the write of {} ({})",
                    i.value, ack.detail
                );
                let last = Some(echoed.clone());
                self.failed(id, last, why, now)
            };
            if let Some(st) = self.tags.get_mut(&tag) {
                if st.inflight.is_none() {
                    st.settle_until = Some(plus(now, timeout));
                }
            }
            return Some(outcome);
        }
        if matched.is_some() {
            let seen = i.value.clone();
            return Some(self.verified(id, seen, now));
        }
        i.stage = Stage::Verifying {
            deadline: plus(now, timeout),
        };
        None
    }

    /// The write of command `id` did not reach the device or the device refused it (`error`
    /// in its words). The tag's expected value goes back to what it was before the command.
    pub fn device_failed(&mut self, id: CommandId, error: &str, now: Timestamp) {
        let Some(i) = self.inflight.remove(&id) else {
            return;
        };
        if let Some(st) = self.tags.get_mut(&i.tag) {
            if st.inflight == Some(id) {
                st.inflight = None;
                st.baseline = i.previous;
            }
        }
        self.audit.push(i.record.step(
            now,
            AuditResult::DeviceError {
                message: error.to_owned(),
            },
        ));
    }

    /// A sample of `tag`: verifies commands in flight and detects unauthorised changes. Only
    /// Good samples count; feed every sample of a watched tag.
    pub fn observe(
        &mut self,
        tag: &TagPath,
        value: &Value,
        quality: Quality,
        now: Timestamp,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        let Some(st) = self.tags.get_mut(tag) else {
            return out;
        };
        st.last_seen = Some(value.clone());
        if !quality.is_good() {
            return out;
        }
        // Per sample: read the two settings, do not clone the policy.
        let (tolerance, restore) = self.policies.get(tag).map_or((0.0, false), |p| {
            (
                p.verify.tolerance,
                p.on_unauthorised_change == OnUnauthorisedChange::Restore,
            )
        });
        if let Some(id) = st.inflight {
            // The verification window: no detection, only verification.
            if let Some(i) = self.inflight.get_mut(&id) {
                if values_match(value, &i.value, tolerance) {
                    match &mut i.stage {
                        Stage::AwaitingDevice { matched } => {
                            matched.get_or_insert(now);
                        }
                        Stage::Verifying { .. } => {
                            out.push(self.verified(id, value.clone(), now));
                        }
                    }
                }
            }
            return out;
        }
        if !st.detect {
            return out;
        }
        let Some(base) = &st.baseline else {
            st.baseline = Some(Baseline {
                value: value.clone(),
                basis: Basis::Learned { at: now },
            });
            return out;
        };
        if let Some(until) = st.settle_until {
            let caught_up = values_match(value, &base.value, tolerance)
                || st
                    .flagged
                    .as_ref()
                    .is_some_and(|f| values_match(value, f, tolerance));
            if !caught_up && now < until {
                return out;
            }
            st.settle_until = None;
        }
        if values_match(value, &base.value, tolerance) {
            if st.flagged.take().is_some() {
                out.push(Outcome::ChangeReverted {
                    tag: tag.clone(),
                    value: value.clone(),
                });
            }
            return out;
        }
        if st
            .flagged
            .as_ref()
            .is_some_and(|f| values_match(value, f, tolerance))
        {
            return out;
        }
        st.flagged = Some(value.clone());
        let change = UnauthorisedChange {
            tag: tag.clone(),
            expected: base.value.clone(),
            seen: value.clone(),
            since: now,
            basis: base.basis.clone(),
            restore: restore.then(|| base.value.clone()),
        };
        let basis = match &change.basis {
            Basis::Commanded { id, at } => format!("commanded by command {id} at {at}"),
            Basis::Configured => "the configured expected value".to_owned(),
            Basis::Learned { at } => format!("first seen at {at}, no command since"),
        };
        let message = format!(
            "unauthorised change of {tag}: the device shows {} but the platform expects {} ({basis}){}",
            change.seen,
            change.expected,
            if change.restore.is_some() {
                "; restoring it"
            } else {
                ""
            }
        );
        let id = CommandId(self.next_id);
        self.next_id += 1;
        self.audit.push(AuditRecord {
            command: id.0,
            ts: now,
            requested_at: now,
            actor_kind: "unknown".to_owned(),
            actor: "unknown".to_owned(),
            role: None,
            session: None,
            confirmer: None,
            confirmer_role: None,
            tag: tag.as_str().to_owned(),
            old_value: change.expected.clone(),
            new_value: change.seen.clone(),
            reason: String::new(),
            origin: "device".to_owned(),
            result: AuditResult::UnauthorisedChange { message },
        });
        out.push(Outcome::UnauthorisedChange(change));
        out
    }

    /// Time passes: selections, pending confirmations and verifications run out.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Outcome> {
        let mut out = Vec::new();
        for st in self.tags.values_mut() {
            if st.selection.as_ref().is_some_and(|s| s.expires_at <= now) {
                st.selection = None;
            }
        }
        let expired: Vec<CommandId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Decision::Refused(refusal) = self.expire_pending(id, now) {
                out.push(Outcome::ConfirmationExpired { id, refusal });
            }
        }
        let late: Vec<CommandId> = self
            .inflight
            .iter()
            .filter(|(_, i)| matches!(i.stage, Stage::Verifying { deadline } if deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(i) = self.inflight.get(&id) else {
                continue;
            };
            let timeout = self.policy(&i.tag).verify.timeout;
            let last = self.tags.get(&i.tag).and_then(|t| t.last_seen.clone());
            let why = format!(
                "no Good sample showed {} within {:.3} s of the device's acknowledgement (last seen: {})",
                i.value,
                timeout.as_secs_f64(),
                last.as_ref().map_or("nothing".to_owned(), Value::to_string)
            );
            out.push(self.failed(id, last, why, now));
        }
        out
    }

    /// The state to keep across a restart (see [`CommandSnapshot`]). A tag with a command in
    /// flight keeps the expectation it had before that command (the outcome is unknown).
    pub fn snapshot(&self) -> CommandSnapshot {
        let mut tags: Vec<TagSnapshot> = self
            .tags
            .iter()
            .map(|(tag, st)| {
                let base = match st.inflight.and_then(|id| self.inflight.get(&id)) {
                    Some(i) => i.previous.as_ref(),
                    None => st.baseline.as_ref(),
                };
                let (basis, command, since) = match base.map(|b| &b.basis) {
                    None => (None, None, None),
                    Some(Basis::Commanded { id, at }) => (Some("commanded"), Some(id.0), Some(*at)),
                    Some(Basis::Configured) => (Some("configured"), None, None),
                    Some(Basis::Learned { at }) => (Some("learned"), None, Some(*at)),
                };
                TagSnapshot {
                    tag: tag.as_str().to_owned(),
                    expected: base.map(|b| b.value.clone()),
                    basis: basis.map(str::to_owned),
                    command,
                    since,
                    last_write_at: st.last_write.map(|(_, at)| at),
                    last_write_value: st.last_write.and_then(|(v, _)| v),
                    flagged: st.flagged.clone(),
                }
            })
            .collect();
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        CommandSnapshot {
            version: 1,
            next_command: self.next_id,
            tags,
        }
    }

    /// Takes back a [`CommandPath::snapshot`] at start, before any sample or command. A
    /// configured `expected` value wins over a kept `configured` one (the file may have
    /// changed); kept tags are watched for read-back. Whether a tag's changes are judged is
    /// configuration, not state: the platform [`watch`](Self::watch)es its declared setpoints
    /// at every start. Nothing is applied if the snapshot is unusable.
    pub fn restore(&mut self, snap: &CommandSnapshot) -> Result<usize, SnapshotError> {
        if snap.version != 1 {
            return Err(SnapshotError::Version(snap.version));
        }
        let mut parsed = Vec::with_capacity(snap.tags.len());
        for t in &snap.tags {
            let tag = TagPath::parse(&t.tag).map_err(|_| SnapshotError::Tag(t.tag.clone()))?;
            let basis = match (t.basis.as_deref(), t.command, t.since) {
                (None, ..) => None,
                (Some("commanded"), Some(id), Some(at)) => Some(Basis::Commanded {
                    id: CommandId(id),
                    at,
                }),
                (Some("configured"), ..) => Some(Basis::Configured),
                (Some("learned"), _, Some(at)) => Some(Basis::Learned { at }),
                (Some(other), ..) => {
                    return Err(SnapshotError::Basis {
                        tag: t.tag.clone(),
                        basis: other.to_owned(),
                    })
                }
            };
            parsed.push((tag, basis, t));
        }
        let n = parsed.len();
        for (tag, basis, t) in parsed {
            let st = self.tags.entry(tag).or_default();
            match (basis, &t.expected) {
                (Some(Basis::Configured), _) | (None, _) | (_, None) => {}
                (Some(basis), Some(value)) => {
                    st.baseline = Some(Baseline {
                        value: value.clone(),
                        basis,
                    });
                }
            }
            if let Some(at) = t.last_write_at {
                st.last_write = Some((t.last_write_value, at));
            }
            st.flagged = t.flagged.clone();
        }
        self.next_id = self.next_id.max(snap.next_command);
        Ok(n)
    }

    // ---- internals --------------------------------------------------------------------------

    /// Authorisation, existence, writability.
    fn check_access(&self, req: &CommandRequest) -> Result<(), RefusalReason> {
        if let Authorisation::Denied(denial) = &req.authorisation {
            return Err(RefusalReason::NotAuthorised {
                identity: req.requester.actor.identity(),
                denial: denial.clone(),
            });
        }
        let Some(info) = &req.info else {
            return Err(RefusalReason::UnknownTag);
        };
        if !info.writable {
            return Err(RefusalReason::NotWritable);
        }
        Ok(())
    }

    /// Access, value type, envelope, interlocks. Normalises an integer for a float tag.
    fn check(
        &self,
        req: &mut CommandRequest,
        policy: &TagPolicy,
        interlocks: &dyn Interlocks,
        now: Timestamp,
    ) -> Result<(), RefusalReason> {
        self.check_access(req)?;
        let Some(info) = &req.info else {
            return Err(RefusalReason::UnknownTag);
        };
        if !admits(info.value_type, &req.value) {
            return Err(RefusalReason::BadValueType {
                expected: info.value_type,
                got: req.value.kind(),
            });
        }
        if info.value_type == ValueType::Float {
            if let Some(x) = req.value.as_f64() {
                req.value = Value::Float(x);
            }
        }
        let Some(info) = &req.info else {
            return Err(RefusalReason::UnknownTag);
        };
        self.check_envelope(req, info, policy, now)
            .map_err(RefusalReason::Envelope)?;
        for name in &policy.interlocks {
            let message = self
                .messages
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.clone());
            let status = interlocks.status(name);
            let (state, detail) = match status {
                Some(s) => (s.state, s.detail),
                None => (
                    InterlockState::BadInput,
                    "the interlock was not evaluated".to_owned(),
                ),
            };
            if state != InterlockState::Holds {
                return Err(RefusalReason::Interlock {
                    name: name.clone(),
                    message,
                    state,
                    detail,
                });
            }
        }
        Ok(())
    }

    fn check_envelope(
        &self,
        req: &CommandRequest,
        info: &TagInfo,
        policy: &TagPolicy,
        now: Timestamp,
    ) -> Result<(), EnvelopeViolation> {
        let env = &policy.envelope;
        let last = self.tags.get(&req.tag).and_then(|t| t.last_write);
        if env.is_numeric() {
            let x = match req.value {
                Value::Int(_) | Value::U64(_) | Value::Float(_) => req.value.as_f64(),
                _ => None,
            };
            let Some(x) = x.filter(|x| x.is_finite()) else {
                return Err(EnvelopeViolation::NotNumeric);
            };
            if let Some(min) = env.min {
                if x < min {
                    return Err(EnvelopeViolation::BelowMin { value: x, min });
                }
            }
            if let Some(max) = env.max {
                if x > max {
                    return Err(EnvelopeViolation::AboveMax { value: x, max });
                }
            }
            if let Some(max_step) = env.max_step {
                let from = match &info.current {
                    None => {
                        return Err(EnvelopeViolation::StepUnchecked {
                            why: "the current value is unknown".to_owned(),
                        })
                    }
                    Some((_, q)) if !q.is_good() => {
                        return Err(EnvelopeViolation::StepUnchecked {
                            why: format!("the current value is {q}"),
                        })
                    }
                    Some((v, _)) => v.as_f64().ok_or_else(|| EnvelopeViolation::StepUnchecked {
                        why: format!("the current value {v} is not a number"),
                    })?,
                };
                if (x - from).abs() > max_step {
                    return Err(EnvelopeViolation::StepTooLarge {
                        from,
                        to: x,
                        max_step,
                    });
                }
            }
            if let (Some(max_rate), Some((Some(from), at))) = (env.max_rate, last) {
                let elapsed = since(now, at);
                let secs = elapsed.as_secs_f64();
                let delta = (x - from).abs();
                let too_fast = if secs > 0.0 {
                    delta / secs > max_rate
                } else {
                    delta > 0.0
                };
                if too_fast {
                    return Err(EnvelopeViolation::RateTooHigh {
                        from,
                        to: x,
                        elapsed,
                        max_rate,
                    });
                }
            }
        }
        if let (Some(min_interval), Some((_, at))) = (env.min_interval, last) {
            let elapsed = since(now, at);
            if elapsed < min_interval {
                return Err(EnvelopeViolation::TooSoon {
                    elapsed,
                    min_interval,
                });
            }
        }
        Ok(())
    }

    /// Select-before-operate for a people's command (rules and the platform do not select).
    /// Consumes the selection when it matches.
    fn check_selection(
        &mut self,
        req: &CommandRequest,
        now: Timestamp,
    ) -> Result<(), RefusalReason> {
        if !matches!(req.requester.actor, Actor::User { .. }) {
            return Ok(());
        }
        let Some(session) = &req.requester.session else {
            return Err(RefusalReason::NoSession);
        };
        let st = self.tags.entry(req.tag.clone()).or_default();
        let Some(sel) = &st.selection else {
            return Err(RefusalReason::NotSelected);
        };
        if &sel.session != session {
            if sel.expires_at > now {
                return Err(RefusalReason::SelectedByAnotherSession {
                    holder: sel.session.clone(),
                    expires_at: sel.expires_at,
                });
            }
            st.selection = None;
            return Err(RefusalReason::NotSelected);
        }
        if now >= sel.expires_at {
            let expired_at = sel.expires_at;
            st.selection = None;
            return Err(RefusalReason::SelectExpired { expired_at });
        }
        if let Some(v) = &sel.value {
            if !values_match(v, &req.value, 0.0) {
                return Err(RefusalReason::SelectValueMismatch {
                    selected: v.clone(),
                });
            }
        }
        st.selection = None;
        Ok(())
    }

    fn refuse(
        &mut self,
        id: CommandId,
        req: &CommandRequest,
        now: Timestamp,
        reason: RefusalReason,
    ) -> Decision {
        Decision::Refused(self.refuse_err(id, req, now, reason))
    }

    fn refuse_err(
        &mut self,
        id: CommandId,
        req: &CommandRequest,
        now: Timestamp,
        reason: RefusalReason,
    ) -> Refusal {
        self.audit.push(AuditRecord::from_request(
            id,
            req,
            now,
            AuditResult::Refused {
                code: reason.code().to_owned(),
                message: reason.to_string(),
            },
        ));
        Refusal {
            tag: req.tag.clone(),
            reason,
        }
    }

    fn expire_pending(&mut self, id: CommandId, now: Timestamp) -> Decision {
        let Some(p) = self.pending.remove(&id) else {
            return Decision::Refused(Refusal {
                tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                reason: RefusalReason::UnknownPending { id },
            });
        };
        let reason = RefusalReason::ConfirmationExpired {
            requested_by: p.request.requester.actor.identity(),
            expired_at: p.expires_at,
        };
        self.audit.push(p.record.step(
            now,
            AuditResult::Refused {
                code: reason.code().to_owned(),
                message: reason.to_string(),
            },
        ));
        Decision::Refused(Refusal {
            tag: p.request.tag,
            reason,
        })
    }

    fn accept(
        &mut self,
        id: CommandId,
        req: CommandRequest,
        confirmed_by: Option<String>,
        record: AuditRecord,
        now: Timestamp,
    ) -> Decision {
        self.audit.push(record.clone());
        let st = self.tags.entry(req.tag.clone()).or_default();
        st.last_write = Some((req.value.as_f64(), now));
        let superseded = st.inflight.replace(id);
        let previous = st.baseline.replace(Baseline {
            value: req.value.clone(),
            basis: Basis::Commanded { id, at: now },
        });
        st.flagged = None;
        st.settle_until = None;
        let mut previous = previous;
        if let Some(old) = superseded.and_then(|s| self.inflight.remove(&s).map(|i| (s, i))) {
            // The superseded command's own "before" is the real one to go back to.
            previous = old.1.previous.clone();
            self.audit
                .push(old.1.record.step(now, AuditResult::Superseded { by: id.0 }));
        }
        self.inflight.insert(
            id,
            Inflight {
                tag: req.tag.clone(),
                value: req.value.clone(),
                accepted_at: now,
                stage: Stage::AwaitingDevice { matched: None },
                previous,
                record,
            },
        );
        Decision::Accepted(Accepted {
            id,
            tag: req.tag,
            value: req.value,
            requested_by: req.requester.actor.identity(),
            confirmed_by,
        })
    }

    fn verified(&mut self, id: CommandId, seen: Value, now: Timestamp) -> Outcome {
        let Some(i) = self.inflight.remove(&id) else {
            return Outcome::Verified {
                id,
                tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                value: seen,
                after: Duration::ZERO,
            };
        };
        if let Some(st) = self.tags.get_mut(&i.tag) {
            if st.inflight == Some(id) {
                st.inflight = None;
            }
        }
        let after = since(now, i.accepted_at);
        self.audit.push(i.record.step(
            now,
            AuditResult::Verified {
                seen: seen.clone(),
                after_ms: millis(after),
            },
        ));
        Outcome::Verified {
            id,
            tag: i.tag,
            value: seen,
            after,
        }
    }

    fn failed(
        &mut self,
        id: CommandId,
        last_seen: Option<Value>,
        why: String,
        now: Timestamp,
    ) -> Outcome {
        let Some(i) = self.inflight.remove(&id) else {
            return Outcome::Failed {
                id,
                tag: TagPath::parse("unknown").expect("a one-level literal path is valid"),
                commanded: Value::Null,
                last_seen,
                why,
            };
        };
        if let Some(st) = self.tags.get_mut(&i.tag) {
            if st.inflight == Some(id) {
                st.inflight = None;
                // The platform still expects the commanded value; the failure is the alarm,
                // so the value seen now is not reported again as an unauthorised change.
                st.flagged = last_seen.clone();
            }
        }
        self.audit.push(i.record.step(
            now,
            AuditResult::Failed {
                last_seen: last_seen.clone().unwrap_or(Value::Null),
                message: why.clone(),
            },
        ));
        Outcome::Failed {
            id,
            tag: i.tag,
            commanded: i.value,
            last_seen,
            why,
        }
    }
}

fn current_of(req: &CommandRequest) -> Value {
    req.info
        .as_ref()
        .and_then(|i| i.current.as_ref())
        .map_or(Value::Null, |(v, _)| v.clone())
}
