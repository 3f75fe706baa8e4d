//! Zero-initialised buffers in anonymous memory advised for transparent huge pages.
//!
//! Why: the sparse FFN keeps its own copy of each layer's down matrix (neuron-major) and reads
//! it in short runs scattered over megabytes, a new 4 KiB page, and so a TLB miss, for almost
//! every run. A `Vec` of that size gets 4 KiB pages where the system gives huge pages only on
//! request (`madvise` mode, the common default); this buffer asks for them before first
//! touch. On the synthetic 1B model the down accumulation took 2.4-2.6 ms a token in 2 MiB
//! pages against 2.8-2.9 ms in 4 KiB ones (`bench`, `--no-mmap`). The model itself is read
//! into one with `--no-mmap` (`GgufFile::read`), for the same reason.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// Plain data for which all-zero bytes are a valid value (what anonymous memory starts as).
///
/// # Safety
/// Implementors must have no padding, no invalid bit patterns and no drop glue.
pub unsafe trait Zeroed: Copy + Send + Sync {}
// SAFETY: integers and IEEE floats: every bit pattern is a value.
unsafe impl Zeroed for u8 {}
unsafe impl Zeroed for i8 {}
unsafe impl Zeroed for u16 {}
unsafe impl Zeroed for f32 {}
unsafe impl Zeroed for half::f16 {}

const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length buffer of `T`, zeroed, 2 MiB-aligned, in anonymous memory advised for huge
/// pages (plain memory where there are none).
pub struct HugeVec<T: Zeroed> {
    map: Option<memmap2::MmapMut>,
    /// Byte offset of the first element in `map`.
    start: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Zeroed> HugeVec<T> {
    /// `len` zeros. Panics when the memory cannot be mapped, as a `Vec` aborts when it
    /// cannot allocate.
    pub fn zeroed(len: usize) -> Self {
        Self::try_zeroed(len)
            .unwrap_or_else(|e| panic!("mapping {len} elements of anonymous memory: {e}"))
    }

    /// `len` zeros, or the error of mapping the memory.
    pub fn try_zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = len * std::mem::size_of::<T>();
        if bytes == 0 {
            return Ok(HugeVec {
                map: None,
                start: 0,
                len,
                _t: PhantomData,
            });
        }
        let map = memmap2::MmapMut::map_anon(bytes + HUGE_PAGE)?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without transparent huge pages the memory still works.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let start = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
        Ok(HugeVec {
            map: Some(map),
            start,
            len,
            _t: PhantomData,
        })
    }
}

impl<T: Zeroed> Deref for HugeVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.map {
            // SAFETY: the map holds `start + len·size_of::<T>()` bytes, `start` is 2 MiB
            // (so `T`-) aligned, and every bit pattern is a `T` (`Zeroed`).
            Some(m) => unsafe {
                std::slice::from_raw_parts(m.as_ptr().add(self.start) as *const T, self.len)
            },
            None => &[],
        }
    }
}

impl<T: Zeroed> DerefMut for HugeVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.map {
            // SAFETY: as in `deref`, and the map is borrowed mutably.
            Some(m) => unsafe {
                std::slice::from_raw_parts_mut(m.as_mut_ptr().add(self.start) as *mut T, self.len)
            },
            None => &mut [],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_then_written_then_read() {
        let mut v = HugeVec::<f32>::zeroed(3 << 20);
        assert_eq!(v.len(), 3 << 20);
        assert!(v.iter().all(|&x| x == 0.0));
        assert_eq!(v.as_ptr() as usize % HUGE_PAGE, 0);
        v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
        assert_eq!(v[12345], 12345.0);
        assert!(HugeVec::<u8>::zeroed(0).is_empty());
    }
}
