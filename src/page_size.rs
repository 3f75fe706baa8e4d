//! How much of a memory range the kernel maps in 2 MiB pages, from `/proc/self/smaps`.
//!
//! Why: decoding streams the weights, and 4 KiB pages cost a TLB miss every 4 KiB (5-20% of
//! decode on the benchmark VM). Whether a mapped model gets 2 MiB pages depends on how its file
//! sits in the page cache (see `gguf::writer`), so `bench` reports it beside its figures.

/// Bytes of `range` in 2 MiB pages (file-backed or anonymous), summed over the mappings that
/// overlap it; `None` where `/proc/self/smaps` cannot be read (not Linux). A mapping that
/// only partly overlaps counts whole.
pub fn huge_page_bytes<T>(range: &[T]) -> Option<usize> {
    let lo = range.as_ptr() as usize;
    let hi = lo + std::mem::size_of_val(range);
    if lo == hi {
        return Some(0);
    }
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(huge_in(&smaps, lo, hi))
}

/// [`huge_page_bytes`] of the addresses `lo..hi` from the text of an smaps file.
fn huge_in(smaps: &str, lo: usize, hi: usize) -> usize {
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        // A mapping's header: `start-end perms offset dev inode [path]`.
        let range = first.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        });
        if let Some((start, end)) = range {
            inside = start < hi && lo < end;
            continue;
        }
        if inside
            && matches!(
                first,
                "AnonHugePages:" | "FilePmdMapped:" | "ShmemPmdMapped:"
            )
        {
            let kib: usize = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += kib * 1024;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0400000 r--p 00000000 fd:00 12 /usr/bin/x
Size:               4096 kB
AnonHugePages:         0 kB
FilePmdMapped:      2048 kB
7f0000000000-7f0000a00000 r--s 00000000 fd:00 99 /models/m.gguf
Size:              10240 kB
Rss:               10240 kB
AnonHugePages:         0 kB
FilePmdMapped:      8192 kB
7f0000a00000-7f0001000000 rw-p 00000000 00:00 0
Size:               6144 kB
AnonHugePages:      4096 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
";

    #[test]
    fn sums_the_mappings_a_range_overlaps() {
        let mib = 1 << 20;
        let m = 0x7f00_0000_0000usize;
        // The model map alone, a part of it, it and the next one, neither.
        assert_eq!(huge_in(SMAPS, m, m + 10 * mib), 8 * mib);
        assert_eq!(huge_in(SMAPS, m + mib, m + 2 * mib), 8 * mib);
        assert_eq!(huge_in(SMAPS, m, m + 11 * mib), 12 * mib);
        assert_eq!(huge_in(SMAPS, m + 16 * mib, m + 20 * mib), 0);
        assert_eq!(huge_in(SMAPS, 0x55d0_c000_0000, 0x55d0_c000_1000), 2 * mib);
    }

    #[test]
    fn reads_this_process() {
        let v = vec![1u8; 1 << 20];
        match huge_page_bytes(&v[..]) {
            Some(n) => assert_eq!(n % (2 << 20), 0, "{n}"),
            None => assert!(!std::path::Path::new("/proc/self/smaps").exists()),
        }
        let empty: [u8; 0] = [];
        assert_eq!(huge_page_bytes(&empty[..]), Some(0));
    }
}
