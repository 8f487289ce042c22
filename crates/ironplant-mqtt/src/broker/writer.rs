//! The writer task of a connection: admits QoS 1/2 messages into the session's window and
//! writes everything queued with one syscall.

use super::*;

/// Most items a writer takes from a queue per wake-up.
const BATCH: usize = 256;

/// Encodes packets for one client: assigns outgoing topic aliases (MQTT 5) and discards
/// packets larger than the client accepts.
struct Encoder {
    version: ProtocolVersion,
    limits: ClientLimits,
    aliases: HashMap<MqttString, NonZeroU16>,
}

impl Encoder {
    /// Appends `packet` to `out`; false when it was discarded (too large for the client).
    fn push(&mut self, packet: Packet, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let mut fresh_alias = None;
        let packet = match packet {
            Packet::Publish(mut p) if self.limits.topic_alias_maximum > 0 => {
                if let Some(a) = self.aliases.get(&p.topic) {
                    p.properties.topic_alias = Some(*a);
                    p.topic = MqttString::new();
                } else if self.aliases.len() < usize::from(self.limits.topic_alias_maximum) {
                    let a = u16::try_from(self.aliases.len() + 1)
                        .ok()
                        .and_then(NonZeroU16::new);
                    if let Some(a) = a {
                        self.aliases.insert(p.topic.clone(), a);
                        fresh_alias = Some(p.topic.clone());
                        p.properties.topic_alias = Some(a);
                    }
                }
                Packet::Publish(p)
            }
            other => other,
        };
        if let Err(e) = codec::encode(&packet, self.version, out) {
            tracing::debug!(error = %e, "cannot encode a packet for this client; skipped");
            out.truncate(start);
            if let Some(t) = fresh_alias {
                self.aliases.remove(&t);
            }
            return false;
        }
        if out.len() - start > self.limits.max_packet_size {
            out.truncate(start);
            if let Some(t) = fresh_alias {
                self.aliases.remove(&t);
            }
            return false;
        }
        true
    }
}

/// Drains the queue into one buffer per wake-up and writes it with one syscall. QoS 1/2
/// messages enter the session's window here (packet ids are assigned under its lock), so the
/// order in which messages reach the client is the order they were queued. Stops when `stop`
/// is kicked (sending DISCONNECT with its reason to a 5.0 client), when a write fails or takes
/// longer than the write timeout; returns the queue, whose messages go back to the session.
pub(super) async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    // The connection's message queue and its control queue (`Conn::tx`, `Conn::ctl`).
    (mut rx, mut ctl): (mpsc::Receiver<Out>, mpsc::Receiver<Out>),
    version: ProtocolVersion,
    session: Arc<Session>,
    limits: ClientLimits,
    inner: Arc<Inner>,
    stop: Arc<Kick>,
) -> mpsc::Receiver<Out> {
    let mut enc = Encoder {
        version,
        limits,
        aliases: HashMap::new(),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut batch: Vec<Out> = Vec::new();
    let stats = &inner.stats;
    let write_timeout = inner.cfg.write_timeout;
    let max_pending = inner.cfg.max_session_queue.max(1);
    let mut ctl_open = true;
    loop {
        // New messages are taken only while the session has room in memory for those that
        // must wait for the client's window: beyond, they stay in the queue, which fills and
        // holds their publishers back (see `Broker::hand_over`), rather than being dropped.
        let room = max_pending.saturating_sub(session.state.lock().pending_in_memory());
        let take = room.min(BATCH);
        let first = tokio::select! {
            biased;
            () = stop.notify.notified() => break,
            o = ctl.recv(), if ctl_open => {
                if o.is_none() {
                    ctl_open = false;
                }
                o
            }
            o = rx.recv(), if take > 0 => match o {
                Some(o) => Some(o),
                None => break,
            }
        };
        let Some(first) = first else { continue };
        let from_rx = usize::from(!matches!(
            first,
            Out::Packet(_) | Out::Release | Out::Resume
        ));
        batch.push(first);
        // Whatever else is ready goes into the same write.
        while batch.len() < 2 * BATCH {
            match ctl.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut more = take.saturating_sub(from_rx);
        while more > 0 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
            more -= 1;
        }
        out.clear();
        let (mut dropped, mut expired) = (0u64, 0u64);
        {
            let mut st = None;
            let mut now = None;
            for item in batch.drain(..) {
                match item {
                    Out::Packet(p) => {
                        enc.push(*p, &mut out);
                    }
                    Out::Deliver(p) if p.qos == QoS::AtMostOnce => {
                        enc.push(Packet::Publish(*p), &mut out);
                    }
                    Out::Deliver(p) => {
                        let st = st.get_or_insert_with(|| session.state.lock());
                        let now = *now.get_or_insert_with(now_ms);
                        match st.admit(Queued::new(*p), now) {
                            Admit::Send(p) => {
                                let pid = p.packet_id;
                                if !enc.push(Packet::Publish(p), &mut out) {
                                    if let Some(pid) = pid {
                                        st.forget(pid);
                                    }
                                }
                            }
                            Admit::Queued => {}
                            Admit::Overflow => dropped += 1,
                            Admit::Expired => expired += 1,
                        }
                    }
                    Out::Release => {
                        let st = st.get_or_insert_with(|| session.state.lock());
                        let now = *now.get_or_insert_with(now_ms);
                        for p in st.release(now, &mut expired) {
                            let pid = p.packet_id;
                            if !enc.push(Packet::Publish(p), &mut out) {
                                if let Some(pid) = pid {
                                    st.forget(pid);
                                }
                            }
                        }
                    }
                    Out::Resume => {
                        let st = st.get_or_insert_with(|| session.state.lock());
                        let now = *now.get_or_insert_with(now_ms);
                        expired += st.expire(now) as u64;
                        for p in st.resend() {
                            enc.push(p, &mut out);
                        }
                        for p in st.release(now, &mut expired) {
                            enc.push(Packet::Publish(p), &mut out);
                        }
                    }
                }
            }
        }
        if dropped > 0 {
            stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if expired > 0 {
            stats.expired.fetch_add(expired, Ordering::Relaxed);
        }
        if !out.is_empty() {
            // A client that stops reading must not hold its connection (and its messages)
            // forever: the write is bounded, and a kick interrupts it.
            let written = tokio::select! {
                biased;
                () = stop.notify.notified() => false,
                r = tokio::time::timeout(write_timeout, wr.write_all(&out)) => matches!(r, Ok(Ok(()))),
            };
            if !written {
                // Cut mid-packet, possibly: no DISCONNECT after that.
                stop.reason.lock().take();
                break;
            }
        }
        if out.capacity() > WRITE_KEEP {
            out = Vec::new();
        }
        if batch.capacity() > 4 * BATCH {
            batch = Vec::new();
        }
    }
    // Goodbye: a 5.0 client learns why (best effort, briefly).
    let reason = *stop.reason.lock();
    out.clear();
    if let (Some(code), ProtocolVersion::V5) = (reason, version) {
        let _ = codec::encode(
            &Packet::Disconnect(Disconnect {
                reason_code: code,
                properties: Default::default(),
            }),
            version,
            &mut out,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
        wr.shutdown().await
    })
    .await;
    rx
}
