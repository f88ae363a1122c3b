//! Properties of the segment scan: it never panics on any bytes, and one
//! damaged byte costs exactly the record that holds it.

use proptest::prelude::*;

use super::record;
use crate::spool::record::scan;

const MAX: usize = 1 << 20;

proptest! {
    #[test]
    fn scan_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let found = scan(&bytes, MAX);
        for (offset, len) in found.frames {
            prop_assert!(offset as usize + len <= bytes.len());
        }
    }

    #[test]
    fn one_damaged_byte_costs_exactly_its_record(
        count in 1usize..12,
        victim in any::<prop::sample::Index>(),
        within in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let frames: Vec<Vec<u8>> = (0..count as u64).map(|n| record(n).encode(MAX).unwrap()).collect();
        let mut offsets = Vec::new();
        let mut bytes = Vec::new();
        for frame in &frames {
            offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(frame);
        }
        let v = victim.index(count);
        let at = offsets[v] as usize + within.index(frames[v].len());
        bytes[at] ^= flip;

        let found = scan(&bytes, MAX);
        let expected: Vec<u64> = offsets.iter().copied().filter(|o| *o != offsets[v]).collect();
        prop_assert_eq!(found.frames.iter().map(|(o, _)| *o).collect::<Vec<_>>(), expected);
        prop_assert_eq!(found.damaged, vec![offsets[v]]);
    }
}
