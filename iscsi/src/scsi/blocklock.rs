//! Block locks of a logical unit shared by every session on every core, so
//! that COMPARE AND WRITE is atomic against writes from any I_T nexus.
//!
//! The LBA space is cut into [`STRIPE_BLOCKS`]-block stripes, folded onto
//! [`STRIPES`] lock words (a range maps to a 64-bit mask of words). A word
//! holds a count of writes in flight (shared holders), an EXCLUSIVE bit for
//! a COMPARE AND WRITE and a WAITING bit that asks whoever releases it to
//! wake the cores ([`BlockLocks::set_notifier`]), whose sessions then retry
//! ([`Connection::poll_shared`](crate::session::Connection::poll_shared)).
//!
//! ```text
//! write:  try_shared(mask)  ── all words free of EXCLUSIVE: count + 1 ... release_shared
//!                           └─ a word EXCLUSIVE: undo, mark WAITING, retry when woken
//! CAW:    try_exclusive(mask) ── EXCLUSIVE set on every word (new writes now wait)
//!         drained(mask)       ── counts reach 0 (writes already in flight end)
//!         ... read, compare, write ... release_exclusive
//! ```
//!
//! Folding makes unrelated blocks share words: that only costs waiting, never
//! correctness. A write takes a few uncontended atomic operations; nothing is
//! locked, and no core is woken unless someone waits.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

/// Blocks per stripe (1 MiB of 512-byte blocks).
pub const STRIPE_BLOCKS: u64 = 2048;
/// Lock words per logical unit.
pub const STRIPES: usize = 64;

const EXCLUSIVE: u32 = 1 << 31;
const WAITING: u32 = 1 << 30;
const COUNT: u32 = WAITING - 1;

/// What [`BlockLocks::try_exclusive`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusive {
    /// Every word is now exclusive to the caller (writes in flight may still
    /// have to drain: [`BlockLocks::drained`]).
    Taken,
    /// Another COMPARE AND WRITE holds a word; nothing was taken.
    Busy,
}

/// The shared block locks of one logical unit.
pub struct BlockLocks {
    words: [AtomicU32; STRIPES],
    notify: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Default for BlockLocks {
    fn default() -> Self {
        BlockLocks {
            words: std::array::from_fn(|_| AtomicU32::new(0)),
            notify: None,
        }
    }
}

impl fmt::Debug for BlockLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held: Vec<(usize, u32)> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w.load(Ordering::Relaxed)))
            .filter(|&(_, v)| v != 0)
            .collect();
        f.debug_struct("BlockLocks").field("held", &held).finish()
    }
}

/// The lock words covering blocks `start..end` (an empty range covers the
/// word of `start`).
pub fn mask(start: u64, end: u64) -> u64 {
    let first = start / STRIPE_BLOCKS;
    let last = end.saturating_sub(1).max(start) / STRIPE_BLOCKS;
    if last - first >= STRIPES as u64 - 1 {
        return u64::MAX;
    }
    (first..=last).fold(0u64, |m, s| m | 1 << (s % STRIPES as u64))
}

/// The word indices set in `mask`, lowest first.
fn words(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

impl BlockLocks {
    /// Locks whose releases call `notify` when someone waits (the target
    /// wakes every core with it).
    pub fn set_notifier(&mut self, notify: Box<dyn Fn() + Send + Sync>) {
        self.notify = Some(notify);
    }

    fn wake(&self) {
        if let Some(n) = &self.notify {
            n();
        }
    }

    /// Marks word `i` WAITING; false if it turned free of EXCLUSIVE
    /// meanwhile (so the caller retries instead of sleeping).
    fn wait_on(&self, i: usize) -> bool {
        self.words[i].fetch_or(WAITING, Ordering::SeqCst) & EXCLUSIVE != 0
    }

    /// Takes words `mask` shared (a write) unless a COMPARE AND WRITE holds
    /// one; then takes nothing and the caller is woken when it goes.
    pub fn try_shared(&self, mask: u64) -> bool {
        'retry: loop {
            let mut taken = 0u64;
            for i in words(mask) {
                let w = &self.words[i];
                let mut v = w.load(Ordering::SeqCst);
                loop {
                    if v & EXCLUSIVE != 0 {
                        self.release_shared(taken);
                        if self.wait_on(i) {
                            return false;
                        }
                        continue 'retry;
                    }
                    match w.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => break,
                        Err(now) => v = now,
                    }
                }
                taken |= 1 << i;
            }
            return true;
        }
    }

    /// Releases words `mask` taken shared.
    pub fn release_shared(&self, mask: u64) {
        let mut wake = false;
        for i in words(mask) {
            let prev = self.words[i].fetch_sub(1, Ordering::SeqCst);
            debug_assert!(prev & COUNT > 0, "shared release of a free word");
            if prev & WAITING != 0 && prev & COUNT == 1 {
                wake = true;
                // A draining COMPARE AND WRITE is woken; writes waiting for
                // it keep WAITING set for its release. With no COMPARE AND
                // WRITE left the mark is stale: drop it unless the word
                // changed meanwhile.
                if prev & EXCLUSIVE == 0 {
                    let now = prev - 1;
                    let _ = self.words[i].compare_exchange(
                        now,
                        now & !WAITING,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
            }
        }
        if wake {
            self.wake();
        }
    }

    /// Takes words `mask` exclusive (a COMPARE AND WRITE): from now on no
    /// new write takes them. Another COMPARE AND WRITE holding one makes
    /// this take nothing ([`Exclusive::Busy`]; the caller is woken later).
    pub fn try_exclusive(&self, mask: u64) -> Exclusive {
        'retry: loop {
            let mut taken = 0u64;
            for i in words(mask) {
                if self.words[i].fetch_or(EXCLUSIVE, Ordering::SeqCst) & EXCLUSIVE != 0 {
                    self.release_exclusive(taken);
                    if self.wait_on(i) {
                        return Exclusive::Busy;
                    }
                    continue 'retry;
                }
                taken |= 1 << i;
            }
            return Exclusive::Taken;
        }
    }

    /// Whether the writes holding words `mask` (taken exclusive by the
    /// caller) have all ended; if not, the last one wakes the caller.
    pub fn drained(&self, mask: u64) -> bool {
        words(mask).all(|i| {
            let w = &self.words[i];
            w.load(Ordering::SeqCst) & COUNT == 0
                || w.fetch_or(WAITING, Ordering::SeqCst) & COUNT == 0
        })
    }

    /// Releases words `mask` taken exclusive.
    pub fn release_exclusive(&self, mask: u64) {
        let mut wake = false;
        for i in words(mask) {
            let prev = self.words[i].fetch_and(!(EXCLUSIVE | WAITING), Ordering::SeqCst);
            wake |= prev & WAITING != 0;
        }
        if wake {
            self.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn counted() -> (BlockLocks, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let mut l = BlockLocks::default();
        let w = Arc::clone(&wakes);
        l.set_notifier(Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        (l, wakes)
    }

    #[test]
    fn masks_fold_stripes_onto_words() {
        assert_eq!(mask(0, 1), 1);
        assert_eq!(mask(0, 0), 1, "an empty range still names a word");
        assert_eq!(mask(2047, 2049), 0b11);
        assert_eq!(
            mask(STRIPE_BLOCKS * 64, STRIPE_BLOCKS * 64 + 1),
            1,
            "folded"
        );
        assert_eq!(mask(5, STRIPE_BLOCKS * 64), u64::MAX);
        assert_eq!(mask(STRIPE_BLOCKS * 63, STRIPE_BLOCKS * 65), 1 << 63 | 1);
    }

    #[test]
    fn writes_share_and_caw_excludes_then_drains() {
        let (l, wakes) = counted();
        let a = mask(0, 8);
        assert!(l.try_shared(a));
        assert!(l.try_shared(a), "writes do not exclude writes");
        assert_eq!(l.try_exclusive(a), Exclusive::Taken);
        assert!(!l.drained(a), "two writes still in flight");
        assert!(!l.try_shared(a), "a new write waits for the CAW");
        assert!(
            l.try_shared(mask(STRIPE_BLOCKS, STRIPE_BLOCKS + 1)),
            "other words are free"
        );
        l.release_shared(a);
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
        l.release_shared(a);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "the last write wakes the CAW"
        );
        assert!(l.drained(a));
        assert_eq!(
            l.try_exclusive(mask(4, 5)),
            Exclusive::Busy,
            "one CAW at a time per word"
        );
        l.release_exclusive(a);
        assert!(wakes.load(Ordering::SeqCst) >= 2, "waiters are woken");
        assert!(l.try_shared(a));
        l.release_shared(a);
        assert_eq!(l.try_exclusive(mask(4, 5)), Exclusive::Taken);
    }

    #[test]
    fn a_busy_multi_word_request_takes_nothing() {
        let (l, _) = counted();
        assert_eq!(
            l.try_exclusive(mask(STRIPE_BLOCKS, STRIPE_BLOCKS + 1)),
            Exclusive::Taken
        );
        // Word 0 free, word 1 exclusive: the write must leave word 0 alone.
        assert!(!l.try_shared(mask(0, STRIPE_BLOCKS + 1)));
        assert_eq!(l.try_exclusive(mask(0, 1)), Exclusive::Taken);
        assert!(
            l.drained(mask(0, 1)),
            "the failed write left no count behind"
        );
    }

    #[test]
    fn threads_never_overlap_a_caw_with_a_write() {
        let l = Arc::new(BlockLocks::default());
        let inside = Arc::new(AtomicU32::new(0));
        let m = mask(0, 16);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (l, inside) = (Arc::clone(&l), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if t == 0 {
                            while l.try_exclusive(m) == Exclusive::Busy {
                                std::hint::spin_loop();
                            }
                            while !l.drained(m) {
                                std::hint::spin_loop();
                            }
                            assert_eq!(inside.fetch_add(1000, Ordering::SeqCst), 0);
                            inside.fetch_sub(1000, Ordering::SeqCst);
                            l.release_exclusive(m);
                        } else {
                            while !l.try_shared(m) {
                                std::hint::spin_loop();
                            }
                            assert!(inside.fetch_add(1, Ordering::SeqCst) < 1000);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            l.release_shared(m);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no overlap");
        }
    }
}
