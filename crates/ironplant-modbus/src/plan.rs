//! Groups points into as few read requests as the Modbus protocol allows.

use ironplant_core::config::{ModbusPoint, ModbusTable};

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub unit_id: u8,
    pub table: ModbusTable,
    pub start: u16,
    pub count: u16,
    /// Indices into the slice given to [`plan_reads`].
    pub points: Vec<usize>,
}

/// Plans reads for `points`: sorted by unit, table and address, neighbours joined while the
/// request stays within the protocol's limit (125 registers / 2000 bits) and the unused space
/// between them is at most `max_gap` items. With `max_gap = 0` only contiguous (or overlapping,
/// e.g. several bits of one register) points share a request, so no request touches an
/// address no tag asked for — some PLCs answer such reads with an exception.
pub fn plan_reads(points: &[ModbusPoint], max_gap: u16) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].unit_id, points[i].table, points[i].address));
    let mut out: Vec<ReadRequest> = Vec::new();
    // Inclusive end of the open request, tracked in u32 to avoid overflow at 0xFFFF.
    let mut end = 0u32;
    for i in order {
        let p = &points[i];
        let (first, last) = (u32::from(p.address), p.last_address());
        if let Some(req) = out.last_mut() {
            let same_block = req.unit_id == p.unit_id && req.table == p.table;
            let new_end = end.max(last);
            let fits = new_end - u32::from(req.start) < u32::from(p.table.max_per_request());
            if same_block && first <= end + 1 + u32::from(max_gap) && fits {
                end = new_end;
                req.count = (end - u32::from(req.start) + 1) as u16;
                req.points.push(i);
                continue;
            }
        }
        end = last;
        out.push(ReadRequest {
            unit_id: p.unit_id,
            table: p.table,
            start: p.address,
            count: p.len(),
            points: vec![i],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{ByteOrder, ModbusDataType, WordOrder};

    fn pt(unit_id: u8, table: ModbusTable, address: u16, data_type: ModbusDataType) -> ModbusPoint {
        ModbusPoint {
            unit_id,
            table,
            address,
            data_type,
            word_order: WordOrder::BigEndian,
            byte_order: ByteOrder::BigEndian,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            count: 1,
        }
    }

    #[test]
    fn joins_contiguous_registers_and_splits_on_gaps_units_and_tables() {
        use ModbusDataType::*;
        use ModbusTable::*;
        let points = vec![
            pt(1, Holding, 2, F32), // 2..=3
            pt(1, Holding, 0, U16), // 0
            pt(1, Holding, 1, U16), // 1
            pt(1, Holding, 10, U16),
            pt(2, Holding, 4, U16),
            pt(1, Input, 4, U16),
            pt(1, Coil, 0, Bool),
            pt(1, Coil, 1, Bool),
        ];
        let plan = plan_reads(&points, 0);
        let summary: Vec<_> = plan
            .iter()
            .map(|r| (r.unit_id, r.table, r.start, r.count, r.points.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, Coil, 0, 2, vec![6, 7]),
                (1, Holding, 0, 4, vec![1, 2, 0]),
                (1, Holding, 10, 1, vec![3]),
                (1, Input, 4, 1, vec![5]),
                (2, Holding, 4, 1, vec![4]),
            ]
        );
        // A gap of 6 unused registers is bridged when allowed.
        let bridged = plan_reads(&points, 6);
        assert_eq!(bridged[1].start, 0);
        assert_eq!(bridged[1].count, 11);
    }

    #[test]
    fn respects_protocol_limits() {
        let regs: Vec<_> = (0..300)
            .map(|a| pt(1, ModbusTable::Input, a, ModbusDataType::U16))
            .collect();
        let plan = plan_reads(&regs, 0);
        assert_eq!(
            plan.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![125, 125, 50]
        );
        let coils: Vec<_> = (0..4500)
            .map(|a| pt(1, ModbusTable::Coil, a, ModbusDataType::Bool))
            .collect();
        assert_eq!(
            plan_reads(&coils, 0)
                .iter()
                .map(|r| r.count)
                .collect::<Vec<_>>(),
            vec![2000, 2000, 500]
        );
        // A 4-register value is never split across requests.
        let mut wide: Vec<_> = (0..124)
            .map(|a| pt(1, ModbusTable::Input, a, ModbusDataType::U16))
            .collect();
        wide.push(pt(1, ModbusTable::Input, 124, ModbusDataType::F64));
        let plan = plan_reads(&wide, 0);
        assert_eq!(
            plan.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            vec![(0, 124), (124, 4)]
        );
    }

    #[test]
    fn top_of_address_space() {
        let points = vec![
            pt(1, ModbusTable::Holding, 0xFFFE, ModbusDataType::U16),
            pt(1, ModbusTable::Holding, 0xFFFF, ModbusDataType::U16),
        ];
        let plan = plan_reads(&points, 0);
        assert_eq!((plan[0].start, plan[0].count), (0xFFFE, 2));
    }
}
