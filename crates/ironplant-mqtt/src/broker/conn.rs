//! One connection's life: CONNECT, attaching to its session, the read loop and what each
//! packet does, detaching, the will.

use super::*;

impl Broker {
    pub(super) async fn connection<S: Transport>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        certificate_subject: Option<String>,
        slot: Option<Slot>,
    ) -> std::io::Result<()> {
        let cfg = &self.inner.cfg;
        // Resource limits, before reading anything: the total (with a reserve for privileged
        // identities, checked after authentication) and per source address. A TLS listener
        // takes the slot before its handshake.
        let Some(_slot) = slot.or_else(|| self.admit(peer)) else {
            return Ok(());
        };
        // Most CONNECTs fit; a larger one grows the buffer.
        let mut buf = BytesMut::with_capacity(256);
        // CONNECT first, within the connect timeout.
        let connect = match Box::pin(tokio::time::timeout(
            cfg.connect_timeout,
            read_connect(&mut stream, &mut buf, cfg.max_packet_size),
        ))
        .await
        {
            Err(_) => {
                tracing::debug!(%peer, "no CONNECT within the timeout; closing");
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Err(e))) => {
                self.inner
                    .stats
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                // Answer in the client's own version (3.1.1 clients cannot read a 5.0 CONNACK).
                let version = match peek_protocol_level(&buf) {
                    Some(5) => ProtocolVersion::V5,
                    _ => ProtocolVersion::V311,
                };
                let code = if matches!(e, DecodeError::UnsupportedProtocolVersion { .. }) {
                    ReasonCode::UnsupportedProtocolVersion
                } else {
                    e.reason_code()
                };
                tracing::debug!(%peer, error = %e, "bad CONNECT");
                if version == ProtocolVersion::V311 && code.to_v311_connack().is_none() {
                    // 3.1.1 has no return code for a malformed CONNECT: close without one
                    // ([MQTT-3.1.4-1]).
                    return Ok(());
                }
                return refuse(&mut stream, version, code).await;
            }
            Ok(Ok(Ok(c))) => c,
        };
        let version = connect.protocol_version;
        let (client_id, assigned) = if connect.client_id.as_str().is_empty() {
            // Unique across restarts too (a stored session of someone else must never be
            // handed to a client that asked for a fresh id).
            let id = format!(
                "ironplant-{:x}-{}",
                now_ms(),
                self.inner.next_assigned.fetch_add(1, Ordering::Relaxed) + 1
            );
            (id, true)
        } else {
            (connect.client_id.as_str().to_owned(), false)
        };
        if assigned && version == ProtocolVersion::V311 && !connect.clean_start {
            return refuse(&mut stream, version, ReasonCode::ClientIdentifierNotValid).await;
        }
        let decided = if self.inner.auth.is_cheap() {
            self.inner.auth.connect(&ConnectInfo {
                peer,
                protocol: version,
                client_id: &client_id,
                client_id_assigned: assigned,
                username: connect.username.as_ref().map(MqttString::as_str),
                password: connect.password.as_deref(),
                certificate_subject: certificate_subject.as_deref(),
            })
        } else {
            // Password hashing takes tens of milliseconds: not on a runtime thread.
            let auth = self.inner.auth.clone();
            let (id, user, password, subject) = (
                client_id.clone(),
                connect.username.clone(),
                connect.password.clone(),
                certificate_subject.clone(),
            );
            tokio::task::spawn_blocking(move || {
                auth.connect(&ConnectInfo {
                    peer,
                    protocol: version,
                    client_id: &id,
                    client_id_assigned: assigned,
                    username: user.as_ref().map(MqttString::as_str),
                    password: password.as_deref(),
                    certificate_subject: subject.as_deref(),
                })
            })
            .await
            .unwrap_or(Err(ReasonCode::ServerUnavailable))
        };
        let principal = match decided {
            Ok(p) => p,
            Err(code) => {
                self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
                refuse(&mut stream, version, code).await?;
                self.inner.auth.denied(None, peer, Denied::Connect(code));
                return Ok(());
            }
        };
        // The reserve above the connection limit is for privileged identities only.
        if self.inner.open.load(Ordering::Relaxed) > cfg.max_connections
            && !self.inner.auth.is_privileged(&principal)
        {
            self.inner.stats.limited.fetch_add(1, Ordering::Relaxed);
            refuse(&mut stream, version, ReasonCode::QuotaExceeded).await?;
            self.inner
                .auth
                .denied(Some(&principal), peer, Denied::Limit("connections"));
            return Ok(());
        }
        // A will is a publication made in advance: the same check as a PUBLISH, now (refuse
        // the CONNECT) and again when it fires.
        if let Some(will) = &connect.will {
            if !self.inner.auth.may_publish(&principal, will.topic.as_str()) {
                self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
                refuse(&mut stream, version, ReasonCode::NotAuthorized).await?;
                self.inner
                    .auth
                    .denied(Some(&principal), peer, Denied::Will(will.topic.as_str()));
                return Ok(());
            }
        }
        let props = &connect.properties;
        let requested = if version == ProtocolVersion::V5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            NEVER
        };
        let expiry = requested.min(cfg.max_session_expiry);
        let window = if version == ProtocolVersion::V5 {
            props.receive_maximum.map_or(u16::MAX, NonZeroU16::get)
        } else {
            u16::MAX
        }
        .min(cfg.max_inflight);
        let limits = ClientLimits {
            topic_alias_maximum: if version == ProtocolVersion::V5 {
                props.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            max_packet_size: props
                .maximum_packet_size
                .map_or(usize::MAX, |m| m.get() as usize),
        };

        let mut ack_props = codec::ConnackProperties::default();
        if version == ProtocolVersion::V5 {
            if assigned {
                ack_props.assigned_client_identifier =
                    MqttString::from_utf8(Bytes::from(client_id.clone())).ok();
            }
            ack_props.maximum_packet_size = u32::try_from(cfg.max_packet_size)
                .ok()
                .and_then(NonZeroU32::new);
            ack_props.receive_maximum = NonZeroU16::new(cfg.receive_maximum);
            ack_props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            if expiry != requested {
                ack_props.session_expiry_interval = Some(expiry);
            }
            if let Some(k) = cfg.server_keep_alive.filter(|k| *k != connect.keep_alive) {
                ack_props.server_keep_alive = Some(k);
            }
        }
        // The keep alive in force: the server's when it imposes one (5.0 clients are told;
        // 3.1.1 clients get it as an upper bound, 0 "never" included).
        let keep_alive = match cfg.server_keep_alive {
            Some(k) if version == ProtocolVersion::V5 => k,
            Some(k) if connect.keep_alive == 0 || connect.keep_alive > k => k,
            _ => connect.keep_alive,
        };
        // Only the will is needed after this (the CONNECT itself is not kept for the
        // connection's life).
        let clean_start = connect.clean_start;
        let will = connect.will.map(Box::new);
        let (tx, rx) = mpsc::channel::<Out>(cfg.max_queue);
        let (ctl, ctl_rx) = mpsc::channel::<Out>(CONTROL_QUEUE);
        let kick = Arc::new(Kick::new());
        let (done_tx, done_rx) = watch::channel(false);
        // (Boxed here and below: a future that runs once or rarely should not add its size to
        // the connection's task for the connection's whole life.)
        let attached = Box::pin(self.attach(
            &client_id,
            clean_start,
            expiry,
            usize::from(window),
            Conn {
                tx: tx.clone(),
                ctl: ctl.clone(),
                kick: kick.clone(),
                done: done_rx,
                principal: Some(principal.clone()),
                peer,
            },
            ack_props,
        ))
        .await;
        let (id, session, generation) = match attached {
            Ok((id, session, generation, removed)) => {
                for f in &removed {
                    self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
                    self.inner
                        .auth
                        .denied(Some(&principal), peer, Denied::ResumedSubscription(f));
                }
                (id, session, generation)
            }
            Err(refusal) => {
                let (code, what) = match refusal {
                    Refusal::Owner => (
                        ReasonCode::NotAuthorized,
                        Denied::Takeover(client_id.as_str()),
                    ),
                    Refusal::Sessions => {
                        self.inner.stats.limited.fetch_add(1, Ordering::Relaxed);
                        (ReasonCode::QuotaExceeded, Denied::Limit("sessions"))
                    }
                };
                self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
                refuse(&mut stream, version, code).await?;
                self.inner.auth.denied(Some(&principal), peer, what);
                return Ok(());
            }
        };
        self.inner.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.connected.fetch_add(1, Ordering::Relaxed);
        let (read_half, write_half) = Transport::split(stream);
        let stop = Arc::new(Kick::new());
        let writer = tokio::spawn(writer(
            write_half,
            (rx, ctl_rx),
            version,
            session.clone(),
            limits,
            self.inner.clone(),
            stop.clone(),
        ));
        let mut ctx = ConnCtx {
            id,
            version,
            peer,
            session: session.clone(),
            principal,
            aliases: Vec::new(),
            expiry,
            requested_zero: requested == 0,
            decided: HashMap::new(),
            last_topic: String::new(),
            last_decision: None,
            epoch: self.inner.auth.epoch(),
            blocked: Vec::new(),
        };
        let outcome = self
            .read_loop(read_half, buf, &mut ctx, keep_alive, &ctl, &kick)
            .await;
        // Messages still waiting for room when the connection ended are not lost.
        for b in ctx.blocked.drain(..) {
            self.keep_late(b.client, b.publish);
        }
        // Stop the writer, then detach: what it had not sent goes back to the session.
        let close = match &outcome {
            Ok(Goodbye::Kick(code)) => Some(*code),
            _ => None,
        };
        // (A kick already carries its reason; the first reason wins.)
        match close {
            Some(code) => {
                stop.kick(code);
            }
            None => stop.notify.notify_one(),
        }
        drop(tx);
        drop(ctl);
        let leftovers = writer.await.ok();
        let (ended, ended_generation) = self.detach(id, generation, ctx.expiry, leftovers);
        self.inner.stats.connected.fetch_sub(1, Ordering::Relaxed);
        let _ = done_tx.send(true);
        // The will goes out unless the client said goodbye properly; MQTT 5 may delay it
        // (will delay interval), and then it is cancelled if the client comes back in time.
        if let (Some(will), false) = (&will, matches!(outcome, Ok(Goodbye::Clean))) {
            let delay = will
                .properties
                .will_delay_interval
                .unwrap_or(0)
                .min(ctx.expiry);
            let p = will_publish(will);
            if delay == 0 || ended {
                self.fire_will(&ctx.principal, peer, p);
            } else {
                self.will_later(
                    session.client_id.clone(),
                    ended_generation,
                    delay,
                    p,
                    ctx.principal.clone(),
                    peer,
                );
            }
        }
        if !ended && ctx.expiry != NEVER {
            self.expire_later(
                session.client_id.clone(),
                ended_generation,
                Duration::from_secs(u64::from(ctx.expiry)),
            );
        }
        outcome.map(|_| ())
    }

    /// Sends a will, if its identity may still publish on its topic (the rules or the identity
    /// may have changed since CONNECT).
    fn fire_will(&self, who: &Principal, peer: SocketAddr, p: Publish) {
        let valid = self
            .inner
            .auth
            .revalidate(&[who])
            .first()
            .copied()
            .unwrap_or(false);
        if valid && self.inner.auth.may_publish(who, p.topic.as_str()) {
            if !self.route(None, who.owner.as_ref(), p) {
                self.inner
                    .auth
                    .denied(Some(who), peer, Denied::Limit("retained_per_owner"));
            }
        } else {
            self.inner
                .stats
                .wills_denied
                .fetch_add(1, Ordering::Relaxed);
            self.inner
                .auth
                .denied(Some(who), peer, Denied::Will(p.topic.as_str()));
        }
    }

    fn will_later(
        &self,
        client_id: Arc<str>,
        generation: u64,
        delay: u32,
        p: Publish,
        who: Principal,
        peer: SocketAddr,
    ) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let Some(inner) = weak.upgrade() else { return };
            let broker = Broker { inner };
            let due = {
                let r = broker.inner.router.lock();
                match r.by_name.get(&client_id).and_then(|id| r.entries.get(id)) {
                    // The session is still the one the client left, and it has not returned.
                    Some(e) => e.conn.is_none() && e.generation == generation,
                    // The session ended meanwhile (its will should have gone then; send now).
                    None => true,
                }
            };
            if due {
                broker.fire_will(&who, peer, p);
            }
        });
    }

    /// Binds a connection to its session: takes over a live connection of the same client id
    /// (waiting until it has detached), resumes the stored session unless `clean` (or starts a
    /// new one). CONNACK (with `ack_props`) and the resume order are queued before the
    /// connection becomes visible to routing, so they come first. Returns (id, session,
    /// generation, stored subscriptions removed because the identity may no longer have them).
    ///
    /// A client id belongs to the identity whose session holds it: another identity can
    /// neither take over its connection nor resume its session (refused, the holder
    /// undisturbed), until that session ends.
    async fn attach(
        &self,
        client_id: &str,
        clean: bool,
        expiry: u32,
        window: usize,
        conn: Conn,
        ack_props: codec::ConnackProperties,
    ) -> Result<(ClientId, Arc<Session>, u64, Vec<String>), Refusal> {
        let greet = |conn: &Conn, present: bool| {
            let ack = Packet::Connack(Connack {
                session_present: present,
                reason_code: ReasonCode::Success,
                properties: ack_props.clone(),
            });
            let _ = conn.ctl.try_send(Out::packet(ack));
            let _ = conn.ctl.try_send(Out::Resume);
        };
        let cfg = &self.inner.cfg;
        let owner = conn.principal.as_ref().and_then(|p| p.owner.clone());
        let foreign = |e: &Entry| e.owner_known && e.owner != owner;
        // Session takeover: the older connection is closed first (only by its own identity).
        for _ in 0..3 {
            let old = {
                let r = self.inner.router.lock();
                match r.by_name.get(client_id).and_then(|id| r.entries.get(id)) {
                    Some(e) if foreign(e) => return Err(Refusal::Owner),
                    Some(e) => e.conn.as_ref().map(|c| {
                        c.kick.kick(ReasonCode::SessionTakenOver);
                        c.done.clone()
                    }),
                    None => None,
                }
            };
            let Some(mut done) = old else { break };
            let _ =
                tokio::time::timeout(Duration::from_secs(5), done.wait_for(|finished| *finished))
                    .await;
        }
        let mut r = self.inner.router.lock();
        let r = &mut *r;
        let existing = r.by_name.get(client_id).copied();
        if let Some(old) = existing {
            if let Some(e) = r.entries.get(&old) {
                // Another identity may have taken the id while we waited.
                if foreign(e) {
                    return Err(Refusal::Owner);
                }
                // A session from before owners were recorded is not resumed: nobody can
                // prove it is theirs.
                if clean || e.conn.is_some() || !e.owner_known {
                    r.remove(old);
                }
            }
        }
        if let Some(id) = r.by_name.get(client_id).copied() {
            let generation = r.next_generation();
            if let Some(e) = r.entries.get_mut(&id) {
                // Stored subscriptions are re-checked against the rules in force now.
                let mut removed = Vec::new();
                if let Some(p) = conn.principal.as_ref() {
                    let auth = &self.inner.auth;
                    e.subs.retain(|(f, _)| {
                        let plain = crate::tree::split_shared(f).map_or(f.as_str(), |(_, f)| f);
                        let keep = auth.may_subscribe(p, plain);
                        if !keep {
                            removed.push(f.clone());
                        }
                        keep
                    });
                    let mut st = e.session.state.lock();
                    if !removed.is_empty() {
                        st.retain_pending(|topic| auth.may_subscribe(p, topic));
                    }
                }
                greet(&conn, true);
                e.conn = Some(conn);
                e.expiry = expiry;
                e.generation = generation;
                let session = e.session.clone();
                {
                    let mut st = session.state.lock();
                    st.window = window.max(1);
                    st.dirty = true;
                    if expiry > 0 && !st.spills() {
                        if let Some(s) = self.inner.spill_for(client_id, true) {
                            st.set_spill(s);
                        }
                    }
                }
                for f in &removed {
                    r.tree.unsubscribe(f, id);
                }
                return Ok((id, session, generation, removed));
            }
        }
        if r.entries.len() - r.internal >= cfg.max_sessions {
            return Err(Refusal::Sessions);
        }
        let id = r.alloc_id();
        let generation = r.next_generation();
        let client_id: Arc<str> = client_id.into();
        let session = Arc::new(Session {
            client_id: client_id.clone(),
            state: Mutex::new(SessionState::new(window, cfg.max_session_queue)),
        });
        {
            let mut st = session.state.lock();
            st.dirty = true;
            if expiry > 0 {
                if let Some(s) = self.inner.spill_for(&client_id, false) {
                    st.set_spill(s);
                }
            }
        }
        greet(&conn, false);
        r.by_name.insert(client_id, id);
        r.entries.insert(
            id,
            Entry {
                session: session.clone(),
                conn: Some(conn),
                subs: Vec::new(),
                expiry,
                last_seen_ms: now_ms(),
                generation,
                internal: false,
                owner,
                owner_known: true,
                origin_tx: None,
            },
        );
        Ok((id, session, generation, Vec::new()))
    }

    /// Unbinds the connection from its session. A session with expiry 0 ends here (true);
    /// otherwise the messages the writer had not sent go back to the session, in order.
    /// Also returns the session's new generation (for timers that wait for its return).
    fn detach(
        &self,
        id: ClientId,
        attached: u64,
        expiry: u32,
        leftovers: Option<Leftovers>,
    ) -> (bool, u64) {
        let mut r = self.inner.router.lock();
        let generation = r.next_generation();
        let Some(e) = r.entries.get_mut(&id) else {
            return (true, generation); // already removed (taken over with a clean start)
        };
        if e.generation != attached {
            // Not ours any more (cannot happen while takeover waits for us; be safe).
            return (false, e.generation);
        }
        e.conn = None;
        e.generation = generation;
        e.last_seen_ms = now_ms();
        e.expiry = expiry;
        if expiry == 0 {
            r.remove(id);
            return (true, generation);
        }
        let mut st = e.session.state.lock();
        st.dirty = true;
        if let Some(mut rx) = leftovers {
            let mut waiting = Vec::new();
            while let Ok(item) = rx.try_recv() {
                waiting.push(item);
            }
            let mut dropped = 0;
            for item in waiting {
                if let Out::Deliver(p) = item {
                    if p.qos != QoS::AtMostOnce {
                        if let Admit::Overflow = st.enqueue(Queued::new(*p)) {
                            dropped += 1;
                        }
                    }
                }
            }
            if dropped > 0 {
                self.inner
                    .stats
                    .dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
        let dropped = st.absorb_overflow();
        if dropped > 0 {
            self.inner
                .stats
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        (false, generation)
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        mut buf: BytesMut,
        ctx: &mut ConnCtx,
        keep_alive: u16,
        tx: &mpsc::Sender<Out>,
        kick: &Kick,
    ) -> std::io::Result<Goodbye> {
        let max = self.inner.cfg.max_packet_size;
        // Keep alive: 1.5 times the interval in force without any packet closes the connection.
        let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut replies: Vec<Out> = Vec::new();
        let mut last_read = 0usize;
        loop {
            // Decode everything buffered: one freeze, then zero-copy slices per packet (their
            // payloads share this buffer); the incomplete tail goes back for the next read.
            let frozen = buf.split().freeze();
            let mut off = 0;
            let mut end = None;
            loop {
                let rest = frozen.slice(off..);
                match codec::decode_bytes(&rest, ctx.version, max) {
                    Ok(Some((packet, used))) => {
                        off += used;
                        if let Some(bye) = self.handle(ctx, packet, &mut replies) {
                            end = Some(bye);
                            break;
                        }
                        // A subscriber's queue is full: nothing more is read from this client
                        // until its message is handed over (back-pressure).
                        if !ctx.blocked.is_empty() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.inner
                            .stats
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %ctx.session.client_id, error = %e, "malformed packet; disconnecting");
                        end = Some(Goodbye::Kick(e.reason_code()));
                        break;
                    }
                }
            }
            // Messages that found a subscriber's queue full are handed over before the
            // publisher gets its acknowledgement; then the packets already read are handled.
            let held = !ctx.blocked.is_empty();
            for b in std::mem::take(&mut ctx.blocked) {
                Box::pin(self.hand_over(b)).await;
            }
            // Acknowledgements wait for room in the writer's queue: a client that does not read
            // its acks stops being read (back-pressure), it does not lose them.
            for r in replies.drain(..) {
                if tx.send(r).await.is_err() {
                    return Ok(Goodbye::Lost);
                }
            }
            if let Some(bye) = end {
                return Ok(bye);
            }
            buf.extend_from_slice(&frozen[off..]);
            if held && off < frozen.len() {
                continue;
            }
            // Room for the next read, sized by the last one: a busy connection gets
            // READ_CHUNK (and more as its packets need), an idle device that sends a small
            // packet now and then keeps a small buffer while it waits (a large one left
            // over from a burst is given back).
            if buf.is_empty() {
                let want = (2 * last_read).next_power_of_two().clamp(64, READ_CHUNK);
                if buf.capacity() > 2 * want {
                    buf = BytesMut::new();
                }
                buf.reserve(want);
            } else {
                buf.reserve(READ_CHUNK);
            }
            let read = async {
                match idle {
                    Some(d) => match tokio::time::timeout(d, rd.read_buf(&mut buf)).await {
                        Ok(r) => r.map(Some),
                        Err(_) => Ok(None),
                    },
                    None => rd.read_buf(&mut buf).await.map(Some),
                }
            };
            let n = tokio::select! {
                r = read => r?,
                () = kick.notify.notified() => {
                    let reason = kick.reason.lock().unwrap_or(ReasonCode::UnspecifiedError);
                    return Ok(Goodbye::Kick(reason));
                }
            };
            match n {
                None => return Ok(Goodbye::Kick(ReasonCode::KeepAliveTimeout)),
                Some(0) => return Ok(Goodbye::Lost),
                Some(n) => last_read = n,
            }
        }
    }

    /// The publish decision for `topic`, asked once per connection and topic while the
    /// authoriser's epoch holds (a topic alias resolves to the same topic, so it is decided
    /// once too): the ACL costs nothing per message on the hot path.
    fn may_publish(&self, ctx: &mut ConnCtx, topic: &str) -> bool {
        let epoch = self.inner.auth.epoch();
        if epoch != ctx.epoch {
            ctx.decided.clear();
            ctx.last_decision = None;
            ctx.epoch = epoch;
        }
        // Most publishers repeat one topic: a comparison, not a hash, on the hot path.
        if let Some(d) = ctx.last_decision {
            if ctx.last_topic == topic {
                return d;
            }
        }
        let d = match ctx.decided.get(topic) {
            Some(&d) => d,
            None => {
                let d = self.inner.auth.may_publish(&ctx.principal, topic);
                // Bounded: a client cycling through topics costs a check per message, never
                // memory.
                if ctx.decided.len() >= DECIDED_MAX {
                    ctx.decided.clear();
                }
                ctx.decided.insert(topic.into(), d);
                d
            }
        };
        // Reuses the buffer: no allocation once it is as long as the client's topics.
        ctx.last_topic.clear();
        ctx.last_topic.push_str(topic);
        ctx.last_decision = Some(d);
        d
    }

    /// Hands a message over to a subscriber whose queue was full, waiting up to
    /// `slow_consumer_timeout` for room; then the subscriber is disconnected (0x97) and its
    /// persistent session keeps the message. An in-process subscriber is never disconnected:
    /// its message is dropped (counted).
    async fn hand_over(&self, b: Blocked) {
        let st = &self.inner.stats;
        if !b.kick.kicked.load(Ordering::Acquire) {
            let wait = self.inner.cfg.slow_consumer_timeout;
            match tokio::time::timeout(wait, b.tx.reserve()).await {
                Ok(Ok(permit)) => {
                    // Under the router lock, and only while the connection is still the
                    // session's: a connection that detached (its queue drained into its
                    // session under this lock) must not get a message nobody will read.
                    let r = self.inner.router.lock();
                    let live = r
                        .entries
                        .get(&b.client)
                        .and_then(|e| e.conn.as_ref())
                        .is_some_and(|c| {
                            Arc::ptr_eq(&c.kick, &b.kick) && !c.kick.kicked.load(Ordering::Acquire)
                        });
                    if live {
                        permit.send(Out::Deliver(Box::new(b.publish)));
                        st.messages_out.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    drop(permit);
                    drop(r);
                }
                // The connection ended meanwhile.
                Ok(Err(_)) => {}
                Err(_) if b.internal => {
                    st.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %b.publish.topic.as_str(), "an in-process subscriber did not take a message in time; dropped");
                    return;
                }
                Err(_) => {
                    if b.kick.kick(ReasonCode::QuotaExceeded) {
                        st.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(?wait, "MQTT subscriber too slow for its publishers; disconnected (its persistent session keeps its messages)");
                    }
                }
            }
        }
        self.keep_late(b.client, b.publish);
    }

    /// A message for a session whose connection is going or gone: a persistent session keeps
    /// it (QoS 1/2), behind what it already holds; otherwise it is dropped (counted).
    fn keep_late(&self, client: ClientId, p: Publish) {
        let st = &self.inner.stats;
        let r = self.inner.router.lock();
        let kept = match r.entries.get(&client) {
            Some(e) => match &e.conn {
                Some(c) if c.kick.kicked.load(Ordering::Acquire) => keep_overflow(e, p),
                // A new connection of the session (it came back meanwhile).
                Some(c) => match c.tx.try_send(Out::Deliver(Box::new(p))) {
                    Ok(()) => true,
                    Err(e2) => match e2.into_inner() {
                        Out::Deliver(p) if p.qos != QoS::AtMostOnce => !matches!(
                            e.session.state.lock().enqueue(Queued::new(*p)),
                            Admit::Overflow
                        ),
                        _ => false,
                    },
                },
                None => {
                    p.qos != QoS::AtMostOnce
                        && e.expiry > 0
                        && !matches!(
                            e.session.state.lock().enqueue(Queued::new(p)),
                            Admit::Overflow
                        )
                }
            },
            None => false,
        };
        let counter = if kept { &st.messages_out } else { &st.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Routes a client's message; false when its retained message exceeded its owner's quota.
    fn route_from(&self, ctx: &mut ConnCtx, p: Publish) -> bool {
        let routed = self.route_inner(
            Some(ctx.id),
            ctx.principal.owner.as_ref(),
            p,
            true,
            Some(&mut ctx.blocked),
        );
        if routed {
            return true;
        }
        self.deny(ctx, Denied::Limit("retained_per_owner"));
        false
    }

    fn deny(&self, ctx: &ConnCtx, what: Denied<'_>) {
        self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
        tracing::info!(client = %ctx.session.client_id, peer = %ctx.peer, ?what, "MQTT request denied");
        self.inner.auth.denied(Some(&ctx.principal), ctx.peer, what);
    }

    /// Handles one packet, pushing what to send back; `Some` ends the connection.
    fn handle(&self, ctx: &mut ConnCtx, packet: Packet, out: &mut Vec<Out>) -> Option<Goodbye> {
        let cfg = &self.inner.cfg;
        let v5 = ctx.version == ProtocolVersion::V5;
        let ack = |pid, code: ReasonCode| {
            let mut r = PublishResponse::new(pid);
            if v5 {
                r.reason_code = code;
            }
            r
        };
        match packet {
            Packet::Publish(mut p) => {
                // MQTT 5 topic aliases: a non-empty topic (re)binds the alias, an empty one
                // uses it.
                if let Some(alias) = p.properties.topic_alias.take() {
                    let a = usize::from(alias.get());
                    if a > usize::from(cfg.topic_alias_maximum) {
                        return Some(Goodbye::Kick(ReasonCode::TopicAliasInvalid));
                    }
                    if ctx.aliases.len() < a {
                        ctx.aliases.resize(a, None);
                    }
                    if p.topic.as_str().is_empty() {
                        match &ctx.aliases[a - 1] {
                            Some(t) => p.topic = t.clone(),
                            None => return Some(Goodbye::Kick(ReasonCode::ProtocolError)),
                        }
                    } else {
                        ctx.aliases[a - 1] = Some(p.topic.clone());
                    }
                }
                if topic::validate_topic_name(p.topic.as_str()).is_err() {
                    return Some(Goodbye::Kick(ReasonCode::TopicNameInvalid));
                }
                let (qos, pid) = (p.qos, p.packet_id);
                if !self.may_publish(ctx, p.topic.as_str()) {
                    self.deny(ctx, Denied::Publish(p.topic.as_str()));
                    // 3.1.1 has no way to say no: the message is acknowledged and dropped.
                    match (qos, pid) {
                        (QoS::AtLeastOnce, Some(pid)) => out.push(Out::packet(Packet::PubAck(
                            ack(pid, ReasonCode::NotAuthorized),
                        ))),
                        (QoS::ExactlyOnce, Some(pid)) => out.push(Out::packet(Packet::PubRec(
                            ack(pid, ReasonCode::NotAuthorized),
                        ))),
                        _ => {}
                    }
                    return None;
                }
                match (qos, pid) {
                    (QoS::ExactlyOnce, Some(pid)) => {
                        let new = {
                            let mut st = ctx.session.state.lock();
                            if st.incoming_qos2_len() >= usize::from(cfg.receive_maximum)
                                && !st.pubrel_pending(pid)
                            {
                                return Some(Goodbye::Kick(ReasonCode::ReceiveMaximumExceeded));
                            }
                            st.incoming_qos2(pid)
                        };
                        // Exactly once: a re-sent PUBLISH whose PUBREL is still to come is
                        // acknowledged again but not routed again.
                        let code = if new && !self.route_from(ctx, p) {
                            ctx.session.state.lock().forget(pid);
                            ReasonCode::QuotaExceeded
                        } else {
                            ReasonCode::Success
                        };
                        out.push(Out::packet(Packet::PubRec(ack(pid, code))));
                    }
                    (QoS::AtLeastOnce, Some(pid)) => {
                        // Route (and store a retained message) before acknowledging: once the
                        // publisher has its PUBACK, a new subscriber must find it.
                        let code = if self.route_from(ctx, p) {
                            ReasonCode::Success
                        } else {
                            ReasonCode::QuotaExceeded
                        };
                        out.push(Out::packet(Packet::PubAck(ack(pid, code))));
                    }
                    _ => {
                        self.route_from(ctx, p);
                    }
                }
            }
            Packet::PubRel(r) => {
                let known = ctx.session.state.lock().pubrel(r.packet_id);
                out.push(Out::packet(Packet::PubComp(ack(r.packet_id, found(known)))));
            }
            Packet::PubAck(r) => {
                let mut st = ctx.session.state.lock();
                if st.puback(r.packet_id) && st.pending_len() > 0 {
                    release(out);
                }
            }
            Packet::PubRec(r) => {
                let failed = r.reason_code.is_error();
                let known = ctx.session.state.lock().pubrec(r.packet_id, failed);
                if failed {
                    release(out);
                } else {
                    out.push(Out::packet(Packet::PubRel(ack(r.packet_id, found(known)))));
                }
            }
            Packet::PubComp(r) => {
                let mut st = ctx.session.state.lock();
                if st.pubcomp(r.packet_id) && st.pending_len() > 0 {
                    release(out);
                }
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.subscriptions.len());
                let mut retained: Vec<Publish> = Vec::new();
                let mut denied: Vec<String> = Vec::new();
                let mut limited = false;
                {
                    let now = now_ms();
                    let mut r = self.inner.router.lock();
                    let r = &mut *r;
                    for sub in &s.subscriptions {
                        let filter = sub.filter.as_str();
                        if topic::validate_topic_filter(filter).is_err() {
                            codes.push(ReasonCode::TopicFilterInvalid);
                            continue;
                        }
                        let shared = crate::tree::split_shared(filter);
                        let plain = shared.map_or(filter, |(_, f)| f);
                        let held = r.entries.get(&ctx.id).map_or(0, |e| {
                            e.subs.len() - usize::from(e.subs.iter().any(|(f, _)| f == filter))
                        });
                        if held >= cfg.max_subscriptions_per_client {
                            limited = true;
                            codes.push(if v5 {
                                ReasonCode::QuotaExceeded
                            } else {
                                ReasonCode::UnspecifiedError
                            });
                            continue;
                        }
                        if !self.inner.auth.may_subscribe(&ctx.principal, plain) {
                            denied.push(filter.to_owned());
                            codes.push(if v5 {
                                ReasonCode::NotAuthorized
                            } else {
                                ReasonCode::UnspecifiedError
                            });
                            continue;
                        }
                        let opts = SubOptions {
                            qos: sub.options.qos as u8,
                            no_local: sub.options.no_local,
                            retain_as_published: sub.options.retain_as_published,
                            identifier: s.properties.subscription_identifier.map_or(0, |i| i.get()),
                        };
                        let new = r.tree.subscribe(filter, ctx.id, opts);
                        if let Some(e) = r.entries.get_mut(&ctx.id) {
                            match e.subs.iter_mut().find(|(f, _)| f == filter) {
                                Some(slot) => slot.1 = opts,
                                None => e.subs.push((filter.to_owned(), opts)),
                            }
                            e.session.state.lock().dirty = true;
                        }
                        let send_retained = shared.is_none()
                            && match sub.options.retain_handling {
                                codec::RetainHandling::SendAtSubscribe => true,
                                codec::RetainHandling::SendAtSubscribeIfNew => new,
                                codec::RetainHandling::DoNotSend => false,
                            };
                        if send_retained {
                            let m = Match {
                                client: ctx.id,
                                options: SubOptions {
                                    retain_as_published: true,
                                    ..opts
                                },
                                identifiers: vec![opts.identifier],
                                shared: false,
                            };
                            for (_, kept) in r.retained.matching(filter) {
                                if !kept.expired(now) {
                                    let mut p = prepare(&kept.publish, &m);
                                    p.retain = true;
                                    retained.push(p);
                                }
                            }
                        }
                        codes.push(match sub.options.qos {
                            QoS::AtMostOnce => ReasonCode::Success,
                            QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                            QoS::ExactlyOnce => ReasonCode::GrantedQos2,
                        });
                    }
                }
                for f in &denied {
                    self.deny(ctx, Denied::Subscribe(f));
                }
                if limited {
                    self.inner.stats.limited.fetch_add(1, Ordering::Relaxed);
                    self.deny(ctx, Denied::Limit("subscriptions_per_client"));
                }
                out.push(Out::packet(Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                })));
                out.extend(retained.into_iter().map(|p| Out::Deliver(Box::new(p))));
            }
            Packet::Unsubscribe(u) => {
                let mut codes = Vec::with_capacity(u.filters.len());
                {
                    let mut r = self.inner.router.lock();
                    let r = &mut *r;
                    for f in &u.filters {
                        let existed = r.tree.unsubscribe(f.as_str(), ctx.id);
                        if let Some(e) = r.entries.get_mut(&ctx.id) {
                            e.subs.retain(|(x, _)| x != f.as_str());
                            e.session.state.lock().dirty = true;
                        }
                        codes.push(if existed {
                            ReasonCode::Success
                        } else {
                            ReasonCode::NoSubscriptionExisted
                        });
                    }
                }
                if !v5 {
                    codes.clear();
                }
                out.push(Out::packet(Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                })));
            }
            Packet::PingReq => out.push(Out::packet(Packet::PingResp)),
            Packet::Disconnect(d) => {
                // MQTT 5: the client may change its session expiry, but not from 0 (3.14.2.2.2).
                if let Some(e) = d.properties.session_expiry_interval {
                    if ctx.requested_zero && e != 0 {
                        return Some(Goodbye::Kick(ReasonCode::ProtocolError));
                    }
                    ctx.expiry = e.min(cfg.max_session_expiry);
                }
                return Some(if d.reason_code == ReasonCode::DisconnectWithWillMessage {
                    Goodbye::Lost
                } else {
                    Goodbye::Clean
                });
            }
            Packet::Connect(_) => return Some(Goodbye::Kick(ReasonCode::ProtocolError)),
            Packet::Auth(_) => return Some(Goodbye::Kick(ReasonCode::BadAuthenticationMethod)),
            Packet::Connack(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Some(Goodbye::Kick(ReasonCode::ProtocolError));
            }
        }
        None
    }
}

/// Asks the writer to fill the window from the waiting messages; once per batch of packets.
/// Only when messages wait: with no backlog (the common case) an ack costs no wake-up.
fn release(out: &mut Vec<Out>) {
    if !out.iter().any(|o| matches!(o, Out::Release)) {
        out.push(Out::Release);
    }
}

/// The reason code answering a PUBREC/PUBREL for a packet id that was (not) known.
fn found(known: bool) -> ReasonCode {
    if known {
        ReasonCode::Success
    } else {
        ReasonCode::PacketIdentifierNotFound
    }
}

/// Per-connection state of the read side.
pub(super) struct ConnCtx {
    id: ClientId,
    version: ProtocolVersion,
    peer: SocketAddr,
    session: Arc<Session>,
    principal: Principal,
    /// Topic aliases the client set up (index = alias - 1).
    aliases: Vec<Option<MqttString>>,
    /// Session expiry interval in force (DISCONNECT may change it).
    expiry: u32,
    /// The client asked for expiry 0 at CONNECT (it may not raise it at DISCONNECT).
    requested_zero: bool,
    /// Publish decisions by topic, valid while the authoriser's epoch is `epoch`.
    decided: HashMap<Box<str>, bool>,
    /// The last topic decided and its decision (checked before `decided`).
    last_topic: String,
    last_decision: Option<bool>,
    epoch: u64,
    /// Messages of the packet being handled that wait for room in a subscriber's queue.
    blocked: Vec<Blocked>,
}

/// Control packets queued for a connection's writer before its read loop waits (a client that
/// does not read its acks stops being read).
const CONTROL_QUEUE: usize = 256;

/// Most cached publish decisions per connection.
const DECIDED_MAX: usize = 256;

/// What the client announced about what it can receive (MQTT 5).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientLimits {
    pub(super) topic_alias_maximum: u16,
    pub(super) max_packet_size: usize,
}

/// How a connection ended.
pub(super) enum Goodbye {
    /// DISCONNECT received: no will.
    Clean,
    /// The connection dropped: the will goes out.
    Lost,
    /// We end it with this reason (5.0 clients get a DISCONNECT); the will goes out.
    Kick(ReasonCode),
}

/// What a writer leaves when it stops: its queue and the part of its last batch not sent.
pub(super) type Leftovers = mpsc::Receiver<Out>;

async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    version: ProtocolVersion,
    code: ReasonCode,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    // 3.1.1 has six return codes: a refusal 3.1.1 cannot name is "server unavailable".
    let code = match version {
        ProtocolVersion::V311 if code.to_v311_connack().is_none() => ReasonCode::ServerUnavailable,
        _ => code,
    };
    let ack = Packet::Connack(Connack {
        session_present: false,
        reason_code: code,
        properties: Default::default(),
    });
    if codec::encode(&ack, version, &mut out).is_ok() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

/// The protocol level byte of a (possibly malformed) CONNECT in `buf`, if it got that far.
fn peek_protocol_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: type byte, then a variable byte integer (1-4 bytes).
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return None;
        }
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]));
    buf.get(i + 2 + name_len).copied()
}

async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<Result<Connect, DecodeError>> {
    loop {
        match codec::decode_connect(buf, max) {
            Ok(Some((c, used))) => {
                let _ = buf.split_to(used);
                return Ok(Ok(c));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before CONNECT",
            ));
        }
    }
}
