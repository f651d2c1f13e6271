//! Caps a store's linear memory and records the most it ever held.
//!
//! Growing past the cap is refused with [`MemoryLimitExceeded`], which traps
//! the plugin at once: the host classifies it by type, not by error text.

use std::fmt;

use wasmtime::ResourceLimiter;

/// The memory cap of one store.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
    total: usize,
    peak: usize,
}

/// A plugin tried to grow its memory past the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimitExceeded {
    /// Bytes all memories would have held after the growth.
    pub wanted: usize,
    /// The cap, in bytes.
    pub cap: usize,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory would grow to {} bytes, past the cap of {} bytes",
            self.wanted, self.cap
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl MemoryLimiter {
    /// A limiter allowing `cap` bytes across all memories.
    pub fn new(cap: u64) -> Self {
        Self {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            total: 0,
            peak: 0,
        }
    }

    /// The most memory held at once, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak as u64
    }
}

/// Tables and instances a plugin may create; generous for any real component.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
const MAX_INSTANCES: usize = 1_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let wanted = self.total - current.min(self.total) + desired;
        if wanted > self.cap {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                wanted,
                cap: self.cap,
            }));
        }
        self.total = wanted;
        self.peak = self.peak.max(wanted);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}
