//! The rogue Modbus master: a second connection writes a command point of the running
//! simulator, which obeys it like any master's write.

use std::time::Duration;

use ironplant_core::Value;
use ironplant_sim::attack::{rogue_write, AttackError};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_rogue_master_writes_a_setpoint_and_reads_it_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(ironplant_sim::run(listener, 7));

    let done = rogue_write(addr, "speed_setpoint", Value::Int(417))
        .await
        .expect("the write lands");
    assert_eq!(done.point, "speed_setpoint");
    assert_eq!(done.read_back.as_f64(), Some(417.0));
    let stop = rogue_write(addr, "run_enable", Value::Bool(false))
        .await
        .expect("a coil too");
    assert_eq!(stop.read_back, Value::Bool(false));

    // Refused before anything is sent, with what to do instead.
    match rogue_write(addr, "motor_current", Value::Int(1)).await {
        Err(AttackError::UnknownPoint { known, .. }) => {
            assert!(known.contains("speed_setpoint"), "{known}");
        }
        other => panic!("expected UnknownPoint, got {other:?}"),
    }
    assert!(matches!(
        rogue_write(addr, "speed_setpoint", Value::Float(-5.0)).await,
        Err(AttackError::BadValue { .. })
    ));
    server.abort();

    // Nobody listening: a clear connection error, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = closed.local_addr().expect("addr");
    drop(closed);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        rogue_write(gone, "speed_setpoint", Value::Int(1)),
    )
    .await
    .expect("fails within 10 s")
    .expect_err("nobody listens");
    assert!(err.to_string().contains(&gone.to_string()), "{err}");
}
