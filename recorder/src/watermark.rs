//! Per-agent acknowledgement watermark (pure): the highest outbox sequence S such that every
//! sequence from 1 to S is committed. Agents trim their outbox by it, so it must never pass a
//! gap — except where the agent itself says nothing below `outbox_floor` is pending.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermark {
    mark: u64,
    above: BTreeSet<u64>,
}

impl Watermark {
    pub fn new(mark: u64) -> Self {
        Watermark {
            mark,
            above: BTreeSet::new(),
        }
    }

    pub fn get(&self) -> u64 {
        self.mark
    }

    /// Sequences above the mark that are committed but not yet contiguous.
    pub fn pending(&self) -> usize {
        self.above.len()
    }

    /// A committed sequence number (duplicates are harmless). Returns true if the mark moved.
    pub fn committed(&mut self, seq: u64) -> bool {
        if seq <= self.mark {
            return false;
        }
        self.above.insert(seq);
        self.drain()
    }

    /// The agent's outbox holds nothing below `floor`: the mark may jump to `floor - 1`.
    pub fn floor(&mut self, floor: u64) -> bool {
        let before = self.mark;
        if floor > 0 && floor - 1 > self.mark {
            self.mark = floor - 1;
            self.above = self.above.split_off(&(self.mark + 1));
        }
        self.drain() || self.mark != before
    }

    fn drain(&mut self) -> bool {
        let before = self.mark;
        while self.above.remove(&(self.mark + 1)) {
            self.mark += 1;
        }
        self.mark != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stops_at_gaps_and_floor_jumps_them() {
        let mut w = Watermark::new(0);
        assert!(w.committed(1));
        assert!(!w.committed(3));
        assert_eq!(w.get(), 1);
        assert!(w.committed(2));
        assert_eq!(w.get(), 3);
        assert!(!w.committed(2));
        w.committed(6);
        assert!(w.floor(5));
        assert_eq!(w.get(), 4);
        assert!(w.committed(5));
        assert_eq!(w.get(), 6);
        assert!(!w.floor(3));
    }

    proptest! {
        #[test]
        fn mark_is_highest_contiguous(seqs in proptest::collection::vec(1u64..60, 0..200)) {
            let mut w = Watermark::new(0);
            for s in &seqs { w.committed(*s); }
            let set: BTreeSet<u64> = seqs.iter().copied().collect();
            let mut want = 0;
            while set.contains(&(want + 1)) { want += 1; }
            prop_assert_eq!(w.get(), want);
        }
    }
}
