//! The one policy as MQTT sees it (issue 10): devices speak only under their own client ids,
//! a Sparkplug edge node hears its own commands, tag-prefix limits bind MQTT as they bind
//! REST, revocation and lowered roles are found by `revalidate`, limit refusals are audited at
//! a bounded rate.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use ironplant_mqtt::auth::{Auth, Denied, Principal};
use ironplant_mqtt::codec::ReasonCode;
use ironplant_security::audit::{AuditEvent, AuditQuery};
use ironplant_security::mqtt::device_client_id_allowed;
use ironplant_security::{MqttAuthOptions, PrefixRule, Role, Security, SecurityOptions, TagScopes};

use common::{admin_password, clock_now, info, open, peer};

fn audited(sec: &Security, action: &str) -> Vec<String> {
    sec.audit.sync();
    let page = sec
        .audit
        .query(&AuditQuery {
            kinds: vec!["acl_denied".into()],
            limit: 1000,
            ..AuditQuery::default()
        })
        .expect("query");
    page.records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AclDenied {
                action: a,
                topic,
                client_id,
                ..
            } if a == action => Some(if topic.is_empty() {
                client_id.clone()
            } else {
                topic.clone()
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn a_device_may_use_only_its_own_client_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.ca
        .enroll("press-4", Role::Device, None)
        .expect("enroll");
    sec.ca
        .enroll("press-5", Role::Device, None)
        .expect("enroll");
    for own in ["press-4", "press-4-a", "press-4-sparkplug"] {
        let p = sec
            .mqtt
            .connect(&info(own, None, None, Some("press-4")))
            .unwrap_or_else(|e| panic!("{own}: {e:?}"));
        assert_eq!(p.owner.as_deref(), Some("device:press-4"));
    }
    // Another device's id (which would kick it off and fire its will), a prefix without the
    // dash, an edge node's name: refused and audited.
    for foreign in ["press-5", "press-45", "press-4-", "sim-edge", "ironplant-1"] {
        assert_eq!(
            sec.mqtt
                .connect(&info(foreign, None, None, Some("press-4"))),
            Err(ReasonCode::ClientIdentifierNotValid),
            "{foreign}"
        );
    }
    sec.audit.sync();
    let page = sec
        .audit
        .query(&AuditQuery {
            kinds: vec!["acl_denied".into()],
            ..AuditQuery::default()
        })
        .expect("query");
    let refused: Vec<&str> = page
        .records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AclDenied {
                action, client_id, ..
            } if action == "client_id" => Some(client_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        ["press-5", "press-45", "press-4-", "sim-edge", "ironplant-1"]
    );
    // Patterns are configurable.
    let pats = vec!["plc/%u".to_owned(), "%u.*".to_owned()];
    assert!(device_client_id_allowed(&pats, "p4", "plc/p4"));
    assert!(device_client_id_allowed(&pats, "p4", "p4.x"));
    assert!(!device_client_id_allowed(&pats, "p4", "p4"));
}

#[test]
fn users_and_tokens_own_their_sessions_as_their_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let pw = admin_password(&sec);
    let by_password = sec
        .mqtt
        .connect(&info("scada", Some("admin"), Some(pw.as_bytes()), None))
        .expect("password");
    let token = sec
        .users
        .create_token("admin", None, Duration::from_secs(600), "t", None)
        .expect("token");
    let by_token = sec
        .mqtt
        .connect(&info("scada", None, Some(token.token.as_bytes()), None))
        .expect("token");
    assert_eq!(by_password.owner.as_deref(), Some("user:admin"));
    assert_eq!(by_token.owner, by_password.owner);
    assert!(sec.mqtt.is_privileged(&by_password));
}

#[test]
fn a_sparkplug_edge_node_hears_its_own_commands_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.ca.enroll("line7", Role::Device, None).expect("enroll");
    let node = sec
        .mqtt
        .connect(&info("line7", None, None, Some("line7")))
        .expect("device");
    for own in [
        "spBv1.0/plant/NCMD/line7",
        "spBv1.0/+/NCMD/line7",
        "spBv1.0/plant/DCMD/line7/#",
        "spBv1.0/plant/DCMD/line7/filler",
        "spBv1.0/plant/DCMD/line7/+",
        "spBv1.0/STATE/scada-host",
    ] {
        assert!(sec.mqtt.may_subscribe(&node, own), "{own}");
    }
    for foreign in [
        "spBv1.0/plant/NCMD/line8",
        "spBv1.0/plant/DCMD/line8/#",
        "spBv1.0/plant/NCMD/+",
        "spBv1.0/plant/NDATA/line7",
        "spBv1.0/#",
    ] {
        assert!(!sec.mqtt.may_subscribe(&node, foreign), "{foreign}");
    }
    for own in [
        "spBv1.0/plant/NBIRTH/line7",
        "spBv1.0/plant/DDATA/line7/filler",
    ] {
        assert!(sec.mqtt.may_publish(&node, own), "{own}");
    }
    // Its commands come from the host, never from itself; nor may it speak for the host.
    for foreign in [
        "spBv1.0/plant/NCMD/line8",
        "spBv1.0/STATE/scada-host",
        "spBv1.0/plant/NDEATH/line8",
    ] {
        assert!(!sec.mqtt.may_publish(&node, foreign), "{foreign}");
    }
}

fn scoped_security(
    dir: &std::path::Path,
    clock: &std::sync::Arc<ironplant_security::ManualClock>,
) -> Security {
    let mut configured = BTreeMap::new();
    configured.insert(
        "carol".to_owned(),
        PrefixRule {
            read: Some(vec!["acme/lyon".into()]),
            write: Some(vec!["acme/lyon/line1".into()]),
        },
    );
    let options = SecurityOptions {
        mqtt: MqttAuthOptions {
            uns_prefix: "uns".into(),
            tag_scopes: configured,
            ..MqttAuthOptions::default()
        },
        ..common::options()
    };
    Security::open(dir, clock.clone(), options).expect("open security")
}

#[test]
fn tag_prefix_limits_bind_mqtt_as_they_bind_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = scoped_security(dir.path(), &clock);
    sec.users
        .create_user("carol", "a long enough password", Role::Engineer, None)
        .expect("user");
    // A token limited to one line, on top of carol's configured rule.
    let token = sec
        .users
        .create_token("carol", None, Duration::from_secs(600), "line1", None)
        .expect("token");
    TagScopes::set_token_rule(
        &TagScopes::path(&sec),
        &token.id,
        &PrefixRule {
            read: Some(vec!["acme/lyon/line1".into()]),
            write: None,
        },
    )
    .expect("token rule");
    let scoped = sec
        .mqtt
        .connect(&info("dash", None, Some(token.token.as_bytes()), None))
        .expect("token");
    assert!(sec.mqtt.may_subscribe(&scoped, "uns/acme/lyon/line1/#"));
    assert!(sec
        .mqtt
        .may_subscribe(&scoped, "uns/acme/lyon/line1/filler/speed"));
    for outside in [
        "#",
        "uns/#",
        "uns/acme/lyon/#",
        "uns/acme/lyon/line2/#",
        "uns/+/lyon/line1/#",
        "spBv1.0/#",
        "acme/lyon/line1/#",
    ] {
        assert!(!sec.mqtt.may_subscribe(&scoped, outside), "{outside}");
    }
    // Writes: the configured rule allows line1 only (the token adds no write limit).
    assert!(sec
        .mqtt
        .may_publish(&scoped, "uns/acme/lyon/line1/filler/setpoint"));
    assert!(!sec
        .mqtt
        .may_publish(&scoped, "uns/acme/lyon/line2/filler/setpoint"));
    assert!(!sec.mqtt.may_publish(&scoped, "spBv1.0/g/NCMD/n"));

    // The REST side reads the same rules through the same type.
    let rest = sec
        .mqtt
        .tag_scopes()
        .expect("scopes")
        .access("carol", Some(&token.id));
    assert!(rest.can_read("acme/lyon/line1/filler/speed"));
    assert!(!rest.can_read("acme/lyon/line2/filler/speed"));

    // Narrowing the token's rule changes the decision (the epoch moves) and ends the live
    // connection (revalidate says no).
    let epoch = sec.mqtt.epoch();
    assert_eq!(sec.mqtt.revalidate(&[&scoped]), vec![true]);
    TagScopes::set_token_rule(
        &TagScopes::path(&sec),
        &token.id,
        &PrefixRule {
            read: Some(vec!["acme/lyon/line1/filler".into()]),
            write: None,
        },
    )
    .expect("narrower");
    assert_eq!(sec.mqtt.revalidate(&[&scoped]), vec![false]);
    assert_ne!(sec.mqtt.epoch(), epoch);
    assert!(!sec.mqtt.may_subscribe(&scoped, "uns/acme/lyon/line1/#"));

    // Damaged rules refuse what they decide, never allow it.
    std::fs::write(TagScopes::path(&sec), b"{ not json").expect("damage");
    assert!(sec.mqtt.tag_scopes().is_err());
    assert!(!sec
        .mqtt
        .may_subscribe(&scoped, "uns/acme/lyon/line1/filler/#"));
}

#[test]
fn revalidate_finds_revoked_disabled_expired_and_lowered_identities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.users
        .create_user("olga", "a long enough password", Role::Operator, None)
        .expect("user");
    sec.users
        .create_user("eve", "a long enough password", Role::Engineer, None)
        .expect("user");
    sec.ca.enroll("edge-9", Role::Device, None).expect("enroll");
    let login = |name: &str| {
        sec.mqtt
            .connect(&info(
                name,
                Some(name),
                Some(b"a long enough password"),
                None,
            ))
            .expect("login")
    };
    let olga = login("olga");
    let eve = login("eve");
    let device = sec
        .mqtt
        .connect(&info("edge-9", None, None, Some("edge-9")))
        .expect("device");
    let t = sec
        .users
        .create_token(
            "olga",
            Some(Role::Viewer),
            Duration::from_secs(60),
            "t",
            None,
        )
        .expect("token");
    let token = sec
        .mqtt
        .connect(&info("t", None, Some(t.token.as_bytes()), None))
        .expect("token");
    let all = [&olga, &eve, &device, &token];
    assert_eq!(sec.mqtt.revalidate(&all), vec![true; 4]);

    // A raised role keeps the connection; a lowered one ends it.
    sec.users
        .set_role("olga", Role::Engineer, None)
        .expect("raise");
    sec.users
        .set_role("eve", Role::Viewer, None)
        .expect("lower");
    assert_eq!(sec.mqtt.revalidate(&all), vec![true, false, true, true]);
    sec.ca.revoke("edge-9", None).expect("revoke");
    assert_eq!(sec.mqtt.revalidate(&[&device]), vec![false]);
    sec.users.revoke_token(&t.id, None).expect("revoke token");
    assert_eq!(sec.mqtt.revalidate(&[&token, &olga]), vec![false, true]);
    sec.users.set_disabled("olga", true, None).expect("disable");
    assert_eq!(sec.mqtt.revalidate(&[&olga]), vec![false]);

    // An expired token ends too.
    let t2 = sec
        .users
        .create_token("eve", None, Duration::from_secs(60), "t2", None)
        .expect("token");
    let short = sec
        .mqtt
        .connect(&info("t2", None, Some(t2.token.as_bytes()), None))
        .expect("token");
    assert_eq!(sec.mqtt.revalidate(&[&short]), vec![true]);
    clock.advance(Duration::from_secs(61));
    assert_eq!(sec.mqtt.revalidate(&[&short]), vec![false]);
    let anonymous = Principal {
        client_id: "a".into(),
        user: None,
        roles: Vec::new(),
        owner: None,
    };
    assert_eq!(sec.mqtt.revalidate(&[&anonymous]), vec![true]);
}

#[test]
fn wills_takeovers_and_limits_are_audited_limits_at_a_bounded_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.ca.enroll("edge-1", Role::Device, None).expect("enroll");
    let d = sec
        .mqtt
        .connect(&info("edge-1", None, None, Some("edge-1")))
        .expect("device");
    sec.mqtt
        .denied(Some(&d), peer(), Denied::Will("spBv1.0/STATE/host"));
    sec.mqtt
        .denied(Some(&d), peer(), Denied::Takeover("sim-edge"));
    sec.mqtt.denied(Some(&d), peer(), Denied::Revoked);
    for _ in 0..50 {
        sec.mqtt
            .denied(None, peer(), Denied::Limit("connections_per_address"));
    }
    sec.mqtt.denied(None, peer(), Denied::Limit("sessions"));
    assert_eq!(audited(&sec, "will"), ["spBv1.0/STATE/host"]);
    assert_eq!(audited(&sec, "takeover"), ["sim-edge"]);
    assert_eq!(audited(&sec, "revoked_disconnect"), ["edge-1"]);
    assert_eq!(
        audited(&sec, "limit"),
        ["connections_per_address", "sessions"]
    );
}

#[test]
fn rules_added_to_the_rules_file_apply_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let pw = admin_password(&sec);
    let admin = sec
        .mqtt
        .connect(&info("scada", Some("admin"), Some(pw.as_bytes()), None))
        .expect("admin");
    assert!(sec.mqtt.may_subscribe(&admin, "acme/lyon/recipes/#"));
    let epoch = sec.mqtt.epoch();
    let file = sec.dir().join(ironplant_security::mqtt::ACL_FILE);
    std::fs::write(&file, "role:admin deny subscribe acme/lyon/recipes/#\n").expect("rules");
    // The running platform re-reads it on its next sweep (revalidate) or connect.
    assert_eq!(sec.mqtt.revalidate(&[&admin]), vec![true]);
    assert_ne!(sec.mqtt.epoch(), epoch);
    assert!(!sec.mqtt.may_subscribe(&admin, "acme/lyon/recipes/#"));
    assert!(!sec.mqtt.may_subscribe(&admin, "acme/#"), "a deny overlaps");
    assert!(sec.mqtt.may_subscribe(&admin, "acme/lyon/line1/#"));
    // A damaged file keeps the rules in force.
    std::fs::write(&file, "role:admin deny nonsense\n").expect("damage");
    sec.mqtt.revalidate(&[&admin]);
    assert!(!sec.mqtt.may_subscribe(&admin, "acme/lyon/recipes/#"));
    std::fs::remove_file(&file).expect("remove");
    sec.mqtt.revalidate(&[&admin]);
    assert!(sec.mqtt.may_subscribe(&admin, "acme/lyon/recipes/#"));
}

#[test]
fn a_password_change_ends_what_the_old_password_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.users
        .create_user("pat", "the first long password", Role::Operator, None)
        .expect("user");
    let by_password = sec
        .mqtt
        .connect(&info(
            "pat-1",
            Some("pat"),
            Some(b"the first long password"),
            None,
        ))
        .expect("login");
    let session = sec
        .users
        .create_token(
            "pat",
            None,
            Duration::from_secs(3600),
            ironplant_security::users::SESSION_LABEL,
            None,
        )
        .expect("login session");
    let api = sec
        .users
        .create_token("pat", None, Duration::from_secs(3600), "dashboard", None)
        .expect("api token");
    let by_token = sec
        .mqtt
        .connect(&info("pat-2", None, Some(api.token.as_bytes()), None))
        .expect("token");
    clock.advance(Duration::from_secs(1));
    sec.users
        .set_password("pat", "the second long password", None)
        .expect("passwd");
    // The connection logged in with the old password ends; a deliberate API token stays.
    assert_eq!(
        sec.mqtt.revalidate(&[&by_password, &by_token]),
        vec![false, true]
    );
    // Login sessions made with the old password are revoked, other tokens are not.
    assert!(sec.users.verify_token(&session.token).is_err());
    assert!(sec.users.verify_token(&api.token).is_ok());
    // Logging in again with the new password is valid.
    clock.advance(Duration::from_secs(1));
    let again = sec
        .mqtt
        .connect(&info(
            "pat-1",
            Some("pat"),
            Some(b"the second long password"),
            None,
        ))
        .expect("login");
    assert_eq!(sec.mqtt.revalidate(&[&again]), vec![true]);
}

/// `<uns>/_cmd/<tag>` asks the command path to write the tag: the write policy decides (the
/// role's write_setpoints and the write prefixes), not the topic ACL, so an operator may
/// request commands but still not publish on the tag's own topic; viewers and devices may not.
#[test]
fn command_topics_follow_the_write_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = scoped_security(dir.path(), &clock);
    let login = |name: &str, role: Role| {
        let pw = "a long enough password";
        sec.users.create_user(name, pw, role, None).expect("user");
        sec.mqtt
            .connect(&info(name, Some(name), Some(pw.as_bytes()), None))
            .expect("login")
    };
    let operator = login("olivia", Role::Operator);
    let viewer = login("victor", Role::Viewer);
    let carol = login("carol", Role::Engineer); // write prefix acme/lyon/line1 (configured)
    let cmd = "uns/_cmd/acme/lyon/line1/filler/setpoint";
    assert!(sec.mqtt.may_publish(&operator, cmd));
    assert!(
        !sec.mqtt
            .may_publish(&operator, "uns/acme/lyon/line1/filler/setpoint"),
        "the tag's own topic is still the ACL's (operators only subscribe)"
    );
    assert!(!sec.mqtt.may_publish(&viewer, cmd), "a viewer cannot write");
    assert!(sec.mqtt.may_publish(&carol, cmd));
    assert!(
        !sec.mqtt
            .may_publish(&carol, "uns/_cmd/acme/lyon/line2/filler/setpoint"),
        "outside her write prefix"
    );
    assert!(!sec.mqtt.may_publish(&operator, "uns/_cmd/"), "no tag");
    assert!(
        !sec.mqtt
            .may_publish(&operator, "_cmd/acme/lyon/line1/filler/setpoint"),
        "outside the UNS prefix: the ACL decides"
    );
    sec.ca.enroll("edge-9", Role::Device, None).expect("enroll");
    let device = sec
        .mqtt
        .connect(&info("edge-9", None, None, Some("edge-9")))
        .expect("device");
    assert!(
        !sec.mqtt.may_publish(&device, cmd),
        "devices do not command"
    );
    assert_eq!(
        ironplant_security::policy::command_tag("uns", cmd),
        Some("acme/lyon/line1/filler/setpoint")
    );
    assert_eq!(
        ironplant_security::policy::command_tag("", "_cmd/a/b"),
        Some("a/b")
    );
    assert_eq!(
        ironplant_security::policy::command_tag("uns", "uns/_cmdx/a"),
        None
    );
}
