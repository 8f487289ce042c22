//! A Modbus TCP server over a shared register image (one image per unit id).

use std::collections::BTreeMap;
use std::future::{ready, Ready};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};

/// The four tables of one unit.
#[derive(Debug, Clone, Default)]
pub struct UnitImage {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
    /// What the unit answers to "Read Device Identification" (function 43/14); `None`:
    /// Illegal Function, as many PLCs answer.
    pub identity: Option<crate::ident::DeviceIdentity>,
}

impl UnitImage {
    /// An image with `size` items in every table, all zero.
    pub fn new(size: usize) -> UnitImage {
        UnitImage {
            coils: vec![false; size],
            discrete_inputs: vec![false; size],
            holding: vec![0; size],
            input: vec![0; size],
            identity: None,
        }
    }
}

/// Register images by unit id.
#[derive(Debug, Default)]
pub struct RegisterBank {
    pub units: BTreeMap<u8, UnitImage>,
}

pub type SharedBank = Arc<Mutex<RegisterBank>>;

fn slice<T: Clone>(table: &[T], addr: u16, cnt: u16) -> Result<Vec<T>, ExceptionCode> {
    let start = usize::from(addr);
    let end = start + usize::from(cnt);
    if cnt == 0 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    table
        .get(start..end)
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

fn store<T: Clone>(table: &mut [T], addr: u16, values: &[T]) -> Result<(), ExceptionCode> {
    let start = usize::from(addr);
    let dst = table
        .get_mut(start..start + values.len())
        .ok_or(ExceptionCode::IllegalDataAddress)?;
    dst.clone_from_slice(values);
    Ok(())
}

fn handle(bank: &mut RegisterBank, req: SlaveRequest<'_>) -> Result<Response, ExceptionCode> {
    let unit = bank
        .units
        .get_mut(&req.slave)
        .ok_or(ExceptionCode::GatewayTargetDevice)?;
    Ok(match req.request {
        Request::ReadCoils(a, n) => Response::ReadCoils(slice(&unit.coils, a, n)?),
        Request::ReadDiscreteInputs(a, n) => {
            Response::ReadDiscreteInputs(slice(&unit.discrete_inputs, a, n)?)
        }
        Request::ReadHoldingRegisters(a, n) => {
            Response::ReadHoldingRegisters(slice(&unit.holding, a, n)?)
        }
        Request::ReadInputRegisters(a, n) => {
            Response::ReadInputRegisters(slice(&unit.input, a, n)?)
        }
        Request::WriteSingleCoil(a, v) => {
            store(&mut unit.coils, a, &[v])?;
            Response::WriteSingleCoil(a, v)
        }
        Request::WriteMultipleCoils(a, vs) => {
            store(&mut unit.coils, a, &vs)?;
            Response::WriteMultipleCoils(a, vs.len() as u16)
        }
        Request::WriteSingleRegister(a, v) => {
            store(&mut unit.holding, a, &[v])?;
            Response::WriteSingleRegister(a, v)
        }
        Request::WriteMultipleRegisters(a, vs) => {
            store(&mut unit.holding, a, &vs)?;
            Response::WriteMultipleRegisters(a, vs.len() as u16)
        }
        Request::ReadDeviceIdentification(_, _) => {
            let identity = unit
                .identity
                .as_ref()
                .ok_or(ExceptionCode::IllegalFunction)?;
            Response::ReadDeviceIdentification(crate::ident::to_response(identity))
        }
        _ => return Err(ExceptionCode::IllegalFunction),
    })
}

struct BankService {
    bank: SharedBank,
}

impl tokio_modbus::server::Service for BankService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(handle(&mut self.bank.lock(), req))
    }
}

/// Serves `bank` on `listener` until the task is dropped or accepting fails.
pub async fn serve(listener: TcpListener, bank: SharedBank) -> io::Result<()> {
    let server = Server::new(listener);
    let on_connected = move |stream: TcpStream, addr: SocketAddr| {
        let bank = bank.clone();
        async move {
            tracing::debug!(%addr, "modbus client connected");
            accept_tcp_connection(stream, addr, move |_| {
                Ok(Some(BankService { bank: bank.clone() }))
            })
        }
    };
    server
        .serve(
            &on_connected,
            |err| tracing::debug!(%err, "modbus connection ended"),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_answers_reads_writes_and_exceptions() {
        let mut bank = RegisterBank::default();
        bank.units.insert(1, UnitImage::new(10));
        let req = |request| SlaveRequest { slave: 1, request };
        assert_eq!(
            handle(&mut bank, req(Request::WriteSingleRegister(3, 7))),
            Ok(Response::WriteSingleRegister(3, 7))
        );
        assert_eq!(
            handle(&mut bank, req(Request::ReadHoldingRegisters(2, 2))),
            Ok(Response::ReadHoldingRegisters(vec![0, 7]))
        );
        assert_eq!(
            handle(&mut bank, req(Request::ReadHoldingRegisters(9, 2))),
            Err(ExceptionCode::IllegalDataAddress)
        );
        let other = SlaveRequest {
            slave: 9,
            request: Request::ReadCoils(0, 1),
        };
        assert_eq!(
            handle(&mut bank, other),
            Err(ExceptionCode::GatewayTargetDevice)
        );
    }
}
