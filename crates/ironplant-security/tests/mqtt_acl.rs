//! The broker hook: CONNECT by certificate, password, token or not at all; per-topic ACLs
//! with %c/%u; wildcard-bypass attempts; denials in the audit log.

mod common;

use ironplant_mqtt::auth::{Auth, Denied, Principal};
use ironplant_mqtt::codec::ReasonCode;
use ironplant_security::acl::{filter_contains, filters_overlap, AclIdentity};
use ironplant_security::audit::{AuditEvent, AuditQuery};
use ironplant_security::{Acl, Role};

use common::{admin_password, clock_now, info, open, peer};

#[test]
fn connect_by_certificate_password_token_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let auth = sec.mqtt.clone();
    sec.ca.enroll("edge-1", Role::Device, None).expect("enroll");

    let p = auth
        .connect(&info("edge-1-client", None, None, Some("edge-1")))
        .expect("device");
    assert_eq!(p.user.as_deref(), Some("edge-1"));
    assert_eq!(
        p.roles,
        vec!["device".into(), "device".into()] as Vec<std::sync::Arc<str>>
    );

    sec.ca.revoke("edge-1", None).expect("revoke");
    assert_eq!(
        auth.connect(&info("edge-1-client", None, None, Some("edge-1"))),
        Err(ReasonCode::NotAuthorized)
    );

    let pw = admin_password(&sec);
    let p = auth
        .connect(&info("scada", Some("admin"), Some(pw.as_bytes()), None))
        .expect("password");
    assert_eq!(p.roles.first().map(|r| &**r), Some("admin"));
    assert_eq!(
        auth.connect(&info("scada", Some("admin"), Some(b"nope"), None)),
        Err(ReasonCode::BadUserNameOrPassword)
    );

    let token = sec
        .users
        .create_token(
            "admin",
            Some(Role::Viewer),
            std::time::Duration::from_secs(60),
            "mqtt",
            None,
        )
        .expect("token");
    let p = auth
        .connect(&info("dash", None, Some(token.token.as_bytes()), None))
        .expect("token as password");
    assert_eq!(p.roles.first().map(|r| &**r), Some("viewer"));
    // A viewer reads the plant but cannot write to it.
    let tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
    assert!(auth.may_subscribe(&p, "acme/#"));
    assert!(!auth.may_publish(&p, tag), "a viewer cannot write");
    assert_eq!(
        auth.connect(&info(
            "dash",
            Some("someone-else"),
            Some(token.token.as_bytes()),
            None
        )),
        Err(ReasonCode::BadUserNameOrPassword)
    );

    assert_eq!(
        auth.connect(&info("anon", None, None, None)),
        Err(ReasonCode::NotAuthorized)
    );
}

#[test]
fn lockout_answers_banned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    for _ in 0..3 {
        assert_eq!(
            sec.mqtt
                .connect(&info("c", Some("admin"), Some(b"guess"), None)),
            Err(ReasonCode::BadUserNameOrPassword)
        );
    }
    let pw = admin_password(&sec);
    assert_eq!(
        sec.mqtt
            .connect(&info("c", Some("admin"), Some(pw.as_bytes()), None)),
        Err(ReasonCode::Banned)
    );
}

fn device(name: &str, client_id: &str) -> Principal {
    Principal {
        client_id: client_id.into(),
        user: Some(name.into()),
        roles: vec!["device".into(), "device".into()],
        owner: Some(format!("device:{name}").into()),
    }
}

#[test]
fn a_device_publishes_only_under_its_own_sparkplug_node() {
    // The example: a device may only publish under spBv1.0/<its group>/+/<its node>/#.
    let acl = Acl::parse(
        "device:press-4 allow publish spBv1.0/Stamping/+/%u/#\n\
         device:press-4 allow publish spBv1.0/Stamping/+/%u\n\
         role:device allow subscribe spBv1.0/+/NCMD/%u\n",
    )
    .expect("rules");
    let who = AclIdentity {
        client_id: "press-4",
        name: Some("press-4"),
        role: Some(Role::Device),
        is_device: true,
    };
    assert!(acl.may_publish(&who, "spBv1.0/Stamping/NDATA/press-4"));
    assert!(acl.may_publish(&who, "spBv1.0/Stamping/DDATA/press-4/die-temp"));
    for t in [
        "spBv1.0/Stamping/NDATA/press-5",
        "spBv1.0/Welding/NDATA/press-4",
        "spBv1.0/Stamping/NDATA/press-4x",
        "spBv1.0/STATE/host",
        "other/topic",
    ] {
        assert!(!acl.may_publish(&who, t), "{t}");
    }
    // A user called press-4 is not the device press-4.
    let user = AclIdentity {
        is_device: false,
        ..who
    };
    assert!(!acl.may_publish(&user, "spBv1.0/Stamping/NDATA/press-4"));
}

#[test]
fn wildcards_in_a_subscription_never_widen_access() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let auth = sec.mqtt.clone(); // default rules
    let d = device("edge-1", "edge-1");
    // Its own command topics are allowed ...
    assert!(auth.may_subscribe(&d, "spBv1.0/Line1/NCMD/edge-1"));
    assert!(auth.may_subscribe(&d, "spBv1.0/Line1/DCMD/edge-1/filler"));
    assert!(auth.may_subscribe(&d, "spBv1.0/+/DCMD/edge-1/#"));
    assert!(auth.may_subscribe(&d, "devices/edge-1/#"));
    // ... and every wider filter is refused, although each also matches allowed topics.
    for f in [
        "#",
        "+",
        "spBv1.0/#",
        "spBv1.0/+/NCMD/+",
        "spBv1.0/+/+/edge-1",
        "spBv1.0/Line1/NCMD/#",
        "+/+/NCMD/edge-1",
        "devices/+/#",
        "devices/#",
        "$SYS/#",
        "spBv1.0/+/DCMD/+/#",
    ] {
        assert!(!auth.may_subscribe(&d, f), "{f} must be refused");
    }
    // Publishing with wildcards is not a thing, and other devices' topics are out.
    assert!(!auth.may_publish(&d, "spBv1.0/Line1/NDATA/edge-2"));
    assert!(auth.may_publish(&d, "spBv1.0/Line1/NDATA/edge-1"));
}

#[test]
fn deny_rules_win_and_a_filter_overlapping_them_is_refused() {
    let acl = Acl::parse(
        "role:operator allow subscribe #\n\
         role:operator deny subscribe plant/+/recipes/#\n",
    )
    .expect("rules");
    let op = AclIdentity {
        client_id: "hmi",
        name: Some("olga"),
        role: Some(Role::Operator),
        is_device: false,
    };
    assert!(acl.may_subscribe(&op, "plant/line1/temperature"));
    assert!(acl.may_subscribe(&op, "plant/+/temperature"));
    assert!(!acl.may_subscribe(&op, "plant/line1/recipes/a"));
    for f in ["#", "plant/#", "+/+/recipes/#", "plant/+/+/secret"] {
        assert!(
            !acl.may_subscribe(&op, f),
            "{f} overlaps the denied subtree"
        );
    }
}

#[test]
fn substituted_ids_cannot_change_the_shape_of_a_rule() {
    let acl = Acl::parse("all allow both clients/%c/#\nall deny publish clients/%c/locked\n")
        .expect("rules");
    let who = |client_id| AclIdentity {
        client_id,
        name: Some("u"),
        role: Some(Role::Viewer),
        is_device: false,
    };
    assert!(acl.may_publish(&who("c1"), "clients/c1/x"));
    assert!(!acl.may_publish(&who("c1"), "clients/c1/locked"));
    assert!(!acl.may_publish(&who("c1"), "clients/c2/x"));
    // A client id with '/', '+', '#' or a leading '$' gets nothing from %c rules, and the
    // deny rule with %c applies to everything (fail closed).
    for evil in ["c2/..", "+", "#", "$SYS", "a/b", ""] {
        assert!(!acl.may_publish(&who(evil), "clients/c2/x"), "{evil:?}");
        assert!(!acl.may_subscribe(&who(evil), "clients/#"), "{evil:?}");
        assert!(!acl.may_publish(&who(evil), "clients/a/b/x"), "{evil:?}");
    }
}

/// Both sides of the opt-in, through the broker hook itself: without `allow_anonymous` a client
/// with neither certificate nor credentials is refused; with it, the client connects as nobody
/// (no user, no role) and gets exactly what the `all` rules grant, nothing a role would; and
/// the option never turns a failed login into an anonymous session.
#[test]
fn anonymous_clients_only_with_explicit_opt_in_and_only_all_rules() {
    let rules = "all allow subscribe public/#\n\
                 role:viewer allow subscribe #\n\
                 role:admin allow both #\n";
    let anonymous = info("kiosk", None, None, None);

    // Default: refused, whatever the rules would grant.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let mut opts = common::options();
    opts.acl = Some(Acl::parse(rules).expect("rules"));
    assert!(
        !opts.mqtt.allow_anonymous,
        "anonymous access is off by default"
    );
    let sec =
        ironplant_security::Security::open(dir.path(), clock.clone(), opts.clone()).expect("open");
    assert_eq!(
        sec.mqtt.connect(&anonymous).map(|p| p.client_id),
        Err(ReasonCode::NotAuthorized)
    );
    drop(sec);

    // Opted in: accepted, as nobody.
    let dir = tempfile::tempdir().expect("tempdir");
    opts.mqtt.allow_anonymous = true;
    let sec = ironplant_security::Security::open(dir.path(), clock, opts).expect("open");
    let auth = sec.mqtt.clone();
    let p = auth.connect(&anonymous).expect("anonymous client accepted");
    assert_eq!(&*p.client_id, "kiosk");
    assert_eq!(p.user, None);
    assert!(p.roles.is_empty(), "{:?}", p.roles);
    // Only the `all` rules' rights: subscribe under public/, nothing else.
    assert!(auth.may_subscribe(&p, "public/news"));
    assert!(auth.may_subscribe(&p, "public/#"));
    // `public/#` also matches its parent level (MQTT 4.7.1.2).
    assert!(auth.may_subscribe(&p, "public"));
    for filter in ["#", "plant/#", "publicity", "+/news", "$SYS/#", "spBv1.0/#"] {
        assert!(!auth.may_subscribe(&p, filter), "{filter}");
    }
    for topic in ["public/news", "plant/line1/speed", "spBv1.0/G/NCMD/n"] {
        assert!(!auth.may_publish(&p, topic), "{topic}");
    }
    // A logged-in admin, by comparison, gets what its role grants.
    let pw = admin_password(&sec);
    let admin = auth
        .connect(&info("scada", Some("admin"), Some(pw.as_bytes()), None))
        .expect("admin");
    assert!(auth.may_subscribe(&admin, "plant/#"));

    // The opt-in is for clients that present nothing: a wrong password, a user name without
    // one, or a bad token are still refused, never downgraded to anonymous.
    assert_eq!(
        auth.connect(&info("kiosk", Some("admin"), Some(b"wrong"), None))
            .map(|p| p.client_id),
        Err(ReasonCode::BadUserNameOrPassword)
    );
    assert_eq!(
        auth.connect(&info("kiosk", Some("admin"), None, None))
            .map(|p| p.client_id),
        Err(ReasonCode::BadUserNameOrPassword)
    );
    assert!(auth
        .connect(&info("kiosk", None, Some(b"ipt_forged"), None))
        .is_err());
}

#[test]
fn denials_are_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let d = device("edge-1", "edge-1-cid");
    assert!(!sec.mqtt.may_subscribe(&d, "#"));
    sec.mqtt.denied(Some(&d), peer(), Denied::Subscribe("#"));
    sec.mqtt
        .denied(Some(&d), peer(), Denied::Publish("spBv1.0/L/NDATA/edge-2"));
    sec.audit.sync();
    let page = sec
        .audit
        .query(&AuditQuery {
            kinds: vec!["acl_denied".into()],
            ..AuditQuery::default()
        })
        .expect("query");
    let got: Vec<(String, String)> = page
        .records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AclDenied {
                action,
                topic,
                principal,
                client_id,
                ..
            } => {
                assert_eq!(principal.as_deref(), Some("edge-1"));
                assert_eq!(client_id, "edge-1-cid");
                Some((action.clone(), topic.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("subscribe".to_owned(), "#".to_owned()),
            ("publish".to_owned(), "spBv1.0/L/NDATA/edge-2".to_owned())
        ]
    );
}

/// Checks `filter_contains` and `filters_overlap` against their definitions by brute force:
/// every pair of filters up to three levels over {a, b, $s, +, #}, every topic up to four
/// levels over {a, b, $s, z}.
#[test]
fn containment_and_overlap_agree_with_matching_exhaustively() {
    use ironplant_mqtt::topic::{topic_matches, validate_topic_filter};
    let levels = ["a", "b", "$s", "+", "#"];
    let mut filters = Vec::new();
    let mut stack: Vec<Vec<&str>> = levels.iter().map(|l| vec![*l]).collect();
    while let Some(f) = stack.pop() {
        let s = f.join("/");
        if validate_topic_filter(&s).is_ok() {
            filters.push(s);
        }
        if f.len() < 3 {
            for l in levels {
                let mut g = f.clone();
                g.push(l);
                stack.push(g);
            }
        }
    }
    let mut topics = Vec::new();
    let mut stack: Vec<Vec<&str>> = ["a", "b", "$s", "z"].iter().map(|l| vec![*l]).collect();
    while let Some(t) = stack.pop() {
        topics.push(t.join("/"));
        if t.len() < 4 {
            for l in ["a", "b", "$s", "z"] {
                let mut u = t.clone();
                u.push(l);
                stack.push(u);
            }
        }
    }
    for outer in &filters {
        for inner in &filters {
            let contains = topics
                .iter()
                .all(|t| !topic_matches(inner, t) || topic_matches(outer, t));
            assert_eq!(
                filter_contains(outer, inner),
                contains,
                "{outer} contains {inner}"
            );
            let overlap = topics
                .iter()
                .any(|t| topic_matches(inner, t) && topic_matches(outer, t));
            assert_eq!(
                filters_overlap(outer, inner),
                overlap,
                "{outer} overlaps {inner}"
            );
        }
    }
}
