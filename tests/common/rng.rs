//! The one pseudo-random generator of the tests: xorshift64, deterministic and
//! dependency-free, so that a seed names a run exactly.

/// xorshift64. The seed must not be 0 (the sequence would stay 0).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// A number below `m`.
    pub fn next(&mut self, m: u64) -> u64 {
        self.next_u64() % m
    }

    /// An index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` bytes, the low byte of each step.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
