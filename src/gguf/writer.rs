//! Streaming GGUF v3 writer.
//!
//! A [`GgufWriter`] collects metadata and tensor descriptors (name, shape, type) and lays out the
//! data section up front, so the header can be written before any tensor data exists. Tensor
//! data is then streamed through a [`TensorDataWriter`] in declared order, whole or in chunks;
//! nothing but the header is ever held in memory, which lets multi-gigabyte synthetic models be
//! written tensor by tensor.
//!
//! Layout (as llama.cpp expects): header, tensor infos, zero padding to `general.alignment`
//! (default 32), then each tensor's data at an aligned offset, each followed by zero padding to
//! the alignment.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{GgufError, Result};
use super::reader::{align_up, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH};
use super::value::Value;
use crate::quant::GgmlType;

/// The version we write.
pub const GGUF_VERSION: u32 = 3;
/// llama.cpp stores tensor names in a fixed `char[64]` including the terminating NUL.
pub const MAX_TENSOR_NAME: usize = 63;
const ALIGNMENT_KEY: &str = "general.alignment";

/// Collects metadata and tensor descriptors, then writes the header.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<TensorInfo>,
    names: HashSet<String>,
    alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn werr(msg: impl Into<String>) -> GgufError {
    GgufError::Write(msg.into())
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// Add a metadata pair. Keys must be unique; array elements must all have the declared
    /// element type. `general.alignment` must be a power-of-two `U32` (llama.cpp reads it as
    /// u32) and may only be set before the first tensor, because it moves every offset.
    ///
    /// Nested arrays are valid GGUF and our reader and gguf-py accept them, but llama.cpp
    /// rejects them; avoid them in model files meant for llama.cpp.
    pub fn add(&mut self, key: impl Into<String>, value: Value) -> Result<&mut Self> {
        let key = key.into();
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        check_value(&key, &value, 0)?;
        if key == ALIGNMENT_KEY {
            let a = match value {
                Value::U32(a) if a != 0 && a.is_power_of_two() => a as u64,
                Value::U32(a) => return Err(GgufError::BadAlignment(a as u64)),
                ref v => {
                    return Err(GgufError::Metadata {
                        key,
                        msg: format!("must be U32, found {:?}", v.value_type()),
                    })
                }
            };
            if !self.tensors.is_empty() {
                return Err(werr("general.alignment must be set before adding tensors"));
            }
            self.alignment = a;
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Shorthand for a string value.
    pub fn add_str(&mut self, key: impl Into<String>, s: impl Into<String>) -> Result<&mut Self> {
        self.add(key, Value::String(s.into()))
    }

    /// Set `general.alignment` (adds the key).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self> {
        self.add(ALIGNMENT_KEY, Value::U32(alignment))
    }

    /// Declare a tensor. `dims` are in ggml order (`dims[0]` = row length). Its data offset is
    /// assigned now; the data must later be written in declaration order.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<&TensorInfo> {
        let name = name.into();
        let bad = |msg: String| GgufError::BadTensor {
            name: name.clone(),
            msg,
        };
        if name.len() > MAX_TENSOR_NAME {
            return Err(bad(format!(
                "name is {} bytes (llama.cpp allows {MAX_TENSOR_NAME})",
                name.len()
            )));
        }
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        if dims.is_empty() || dims.len() > 4 {
            return Err(bad(format!("{} dimensions (1 to 4 supported)", dims.len())));
        }
        // llama.cpp keeps element counts in int64_t.
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0 && n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("bad shape {dims:?}")))?;
        if !dims[0].is_multiple_of(ty.block_len() as u64) {
            return Err(bad(format!(
                "row length {} is not a multiple of the {ty} block length {}",
                dims[0],
                ty.block_len()
            )));
        }
        let size = (n / ty.block_len() as u64)
            .checked_mul(ty.block_bytes() as u64)
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        let offset = self.data_len();
        offset
            .checked_add(size)
            .ok_or_else(|| bad("data section overflows".into()))?;
        self.names.insert(name.clone());
        self.tensors.push(TensorInfo {
            name,
            dims: dims.to_vec(),
            ty,
            offset,
        });
        Ok(self.tensors.last().expect("just pushed"))
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Declared tensors with their assigned offsets (relative to the data section).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Bytes of the header including the padding before the data section.
    pub fn header_len(&self) -> u64 {
        align_up(self.encode_header().len() as u64, self.alignment)
    }

    /// Bytes of the data section: every tensor padded to the alignment.
    pub fn data_len(&self) -> u64 {
        self.tensors.last().map_or(0, |t| {
            t.offset + align_up(t.n_bytes() as u64, self.alignment)
        })
    }

    /// Size of the finished file.
    pub fn file_len(&self) -> u64 {
        self.header_len() + self.data_len()
    }

    fn encode_header(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&GGUF_MAGIC);
        b.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            b.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut b, v);
        }
        for t in &self.tensors {
            put_str(&mut b, &t.name);
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ty.id().to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
        }
        b
    }

    /// Write the header and the padding before the data section; tensor data follows through
    /// the returned writer.
    pub fn write_header<W: Write>(self, mut w: W) -> Result<TensorDataWriter<W>> {
        let mut header = self.encode_header();
        header.resize(align_up(header.len() as u64, self.alignment) as usize, 0);
        w.write_all(&header)?;
        Ok(TensorDataWriter {
            w,
            tensors: self.tensors,
            alignment: self.alignment,
            next: 0,
            current_written: None,
        })
    }

    /// Build a small file in memory; `data[i]` is the data of the i-th declared tensor.
    pub fn to_bytes(self, data: &[&[u8]]) -> Result<Vec<u8>> {
        if data.len() != self.tensors.len() {
            return Err(werr(format!(
                "{} tensors declared but {} data buffers given",
                self.tensors.len(),
                data.len()
            )));
        }
        let names: Vec<String> = self.tensors.iter().map(|t| t.name.clone()).collect();
        let mut out = Vec::with_capacity(self.file_len() as usize);
        let mut tw = self.write_header(&mut out)?;
        for (name, d) in names.iter().zip(data) {
            tw.write_tensor_data(name, d)?;
        }
        tw.finish()?;
        Ok(out)
    }

    /// Write a file at `path` atomically: everything goes to a temporary file in the same
    /// directory which is renamed over `path` only after `fill` wrote every tensor and the
    /// data reached the disk. On any error (or panic) the temporary file is removed and `path`
    /// is untouched, so a failed run never leaves a half-written model under the final name.
    pub fn write_file<F, E>(self, path: impl AsRef<Path>, fill: F) -> std::result::Result<(), E>
    where
        F: FnOnce(&mut TensorDataWriter<BufWriter<File>>) -> std::result::Result<(), E>,
        E: From<GgufError>,
    {
        let path = path.as_ref();
        let tmp = TempPath::new(path)?;
        let file = File::create(&tmp.0)
            .map_err(|e| werr(format!("cannot create {}: {e}", tmp.0.display())))?;
        let mut tw = self.write_header(BufWriter::with_capacity(1 << 20, file))?;
        fill(&mut tw)?;
        let buf = tw.finish()?;
        let file = buf
            .into_inner()
            .map_err(|e| GgufError::Io(e.into_error()))?;
        file.sync_all().map_err(GgufError::Io)?;
        drop_cached_pages(&file);
        drop(file);
        tmp.persist(path)?;
        Ok(())
    }
}

/// Ask the kernel to drop `file`'s (clean, just synced) pages from the page cache.
///
/// Why: written data stays cached in small pages, and a model mapped while its file is cached
/// that way is mapped in 4 KiB pages, whose TLB misses slow decoding by ~20% (`powerinfer
/// bench`, BENCHMARKS.md). Read back from disk by the first mapping, it comes into large folios
/// (Linux 6.x on ext4 and others) that are mapped in 2 MiB pages. A hint only: ignored where it
/// does not apply, and it never changes the file.
fn drop_cached_pages(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; posix_fadvise touches no memory of ours.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// A temporary path next to the final one, removed on drop unless persisted.
struct TempPath(PathBuf);

impl TempPath {
    fn new(final_path: &Path) -> Result<TempPath> {
        let name = final_path
            .file_name()
            .ok_or_else(|| werr(format!("{} has no file name", final_path.display())))?;
        // Unique per process and per call, so concurrent writers of one path never share it.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp{}-{n}", std::process::id()));
        Ok(TempPath(final_path.with_file_name(tmp_name)))
    }

    fn persist(self, to: &Path) -> Result<()> {
        std::fs::rename(&self.0, to).map_err(|e| {
            werr(format!(
                "cannot rename {} to {}: {e}",
                self.0.display(),
                to.display()
            ))
        })?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams tensor data after the header, checking names, order and sizes.
#[derive(Debug)]
pub struct TensorDataWriter<W: Write> {
    w: W,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    /// Index of the next tensor to start.
    next: usize,
    /// Bytes written so far of the tensor being written in chunks, if any.
    current_written: Option<u64>,
}

impl<W: Write> TensorDataWriter<W> {
    /// The tensor whose data is expected next.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        match self.current_written {
            Some(_) => self.tensors.get(self.next - 1),
            None => self.tensors.get(self.next),
        }
    }

    /// Write a whole tensor's data; `name` must be the next declared tensor.
    pub fn write_tensor_data(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.begin_tensor(name)?;
        self.write_chunk(data)?;
        if self.current_written.is_some() {
            let t = &self.tensors[self.next - 1];
            return Err(werr(format!(
                "tensor {:?} needs {} bytes, got {}",
                t.name,
                t.n_bytes(),
                data.len()
            )));
        }
        Ok(())
    }

    /// Start the next tensor, whose data then comes through [`Self::write_chunk`]; for tensors
    /// too big to hold in memory at once.
    pub fn begin_tensor(&mut self, name: &str) -> Result<()> {
        if let Some(done) = self.current_written {
            let t = &self.tensors[self.next - 1];
            return Err(werr(format!(
                "tensor {:?} is incomplete ({done} of {} bytes) when starting {name:?}",
                t.name,
                t.n_bytes()
            )));
        }
        let Some(t) = self.tensors.get(self.next) else {
            return Err(werr(format!(
                "tensor {name:?}: all declared tensors are already written"
            )));
        };
        if t.name != name {
            return Err(werr(format!(
                "tensor {name:?} written out of order: expected {:?}",
                t.name
            )));
        }
        self.next += 1;
        self.current_written = Some(0);
        Ok(())
    }

    /// Append data to the tensor begun last; after its last byte the padding follows.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        let Some(done) = self.current_written else {
            return Err(werr("write_chunk without begin_tensor"));
        };
        let t = &self.tensors[self.next - 1];
        let need = t.n_bytes() as u64;
        let total = done + data.len() as u64;
        if total > need {
            return Err(werr(format!(
                "tensor {:?} needs {need} bytes, got at least {total}",
                t.name
            )));
        }
        self.w.write_all(data)?;
        if total == need {
            let pad = (align_up(need, self.alignment) - need) as usize;
            self.w.write_all(&vec![0u8; pad])?;
            self.current_written = None;
        } else {
            self.current_written = Some(total);
        }
        Ok(())
    }

    /// Check every tensor was written, flush, and hand back the sink.
    pub fn finish(mut self) -> Result<W> {
        if let Some(first) = self.next_tensor() {
            let left = self.tensors.len() - self.next + usize::from(self.current_written.is_some());
            return Err(werr(format!(
                "finished with {left} tensor(s) unwritten or incomplete, starting at {:?}",
                first.name
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Reject values that the reader would reject or misread.
fn check_value(key: &str, v: &Value, depth: usize) -> Result<()> {
    if let Value::Array(elem, items) = v {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::TooDeep(MAX_ARRAY_DEPTH));
        }
        for item in items {
            if item.value_type() != *elem {
                return Err(GgufError::Metadata {
                    key: key.to_string(),
                    msg: format!("array of {elem:?} holds a {:?} element", item.value_type()),
                });
            }
            check_value(key, item, depth + 1)?;
        }
    }
    Ok(())
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::String(s) => put_str(b, s),
        Value::Array(elem, items) => {
            b.extend_from_slice(&(*elem as u32).to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(b, item);
            }
        }
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufFile, ValueType};

    fn small() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "llama").unwrap();
        w.add_tensor("a", &[32, 2], GgmlType::Q8_0).unwrap();
        w.add_tensor("b", &[3], GgmlType::F32).unwrap();
        w
    }

    #[test]
    fn layout_is_aligned_and_padded() {
        let w = small();
        let t = w.tensors();
        assert_eq!((t[0].offset, t[1].offset), (0, 96)); // 68 bytes padded to 96
        assert_eq!(w.data_len(), 128);
        let len = w.file_len();
        let header_len = w.header_len();
        let bytes = w.to_bytes(&[&[7; 68], &[1; 12]]).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.data_offset as u64, header_len);
        assert_eq!(f.tensor("a").unwrap().data, &[7; 68][..]);
        assert_eq!(f.tensor("b").unwrap().data, &[1; 12][..]);
        // Padding is zeros.
        assert!(f.bytes()[f.data_offset + 68..f.data_offset + 96]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn order_size_and_completeness_are_checked() {
        let mut tw = small().write_header(Vec::new()).unwrap();
        let e = tw.write_tensor_data("b", &[0; 12]).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
        let e = tw.write_tensor_data("a", &[0; 67]).unwrap_err();
        assert!(e.to_string().contains("needs 68 bytes"), "{e}");
        let mut tw = small().write_header(Vec::new()).unwrap();
        tw.begin_tensor("a").unwrap();
        tw.write_chunk(&[0; 60]).unwrap();
        assert!(tw.write_chunk(&[0; 9]).is_err());
        tw.write_chunk(&[0; 8]).unwrap();
        let e = tw.finish().unwrap_err();
        assert!(e.to_string().contains("\"b\""), "{e}");
    }

    #[test]
    fn bad_declarations_are_refused() {
        let mut w = small();
        assert!(matches!(
            w.add_str("general.architecture", "x"),
            Err(GgufError::DuplicateKey(_))
        ));
        assert!(matches!(
            w.add_tensor("a", &[32], GgmlType::F32),
            Err(GgufError::DuplicateTensor(_))
        ));
        assert!(w.add_tensor("c", &[33], GgmlType::Q4_0).is_err());
        assert!(w.add_tensor("c", &[0], GgmlType::F32).is_err());
        assert!(w.add_tensor("c", &[1, 1, 1, 1, 1], GgmlType::F32).is_err());
        assert!(w.add_tensor("x".repeat(64), &[1], GgmlType::F32).is_err());
        assert!(w.add_tensor("c", &[u64::MAX, 2], GgmlType::F32).is_err());
        assert!(w.set_alignment(64).is_err(), "alignment after tensors");
        let mut w = GgufWriter::new();
        assert!(w.set_alignment(48).is_err());
        assert!(w.add("general.alignment", Value::U64(64)).is_err());
        let mixed = Value::Array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]);
        assert!(w.add("k", mixed).is_err());
    }

    #[test]
    fn alignment_is_honoured() {
        let mut w = GgufWriter::new();
        w.set_alignment(256).unwrap();
        w.add_tensor("a", &[5], GgmlType::F32).unwrap();
        w.add_tensor("b", &[5], GgmlType::F32).unwrap();
        assert_eq!(w.tensors()[1].offset, 256);
        let bytes = w.to_bytes(&[&[1; 20], &[2; 20]]).unwrap();
        assert_eq!(bytes.len() % 256, 0);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment, 256);
        assert_eq!(f.data_offset % 256, 0);
        assert_eq!(f.tensor("b").unwrap().data, &[2; 20][..]);
    }

    #[test]
    fn write_file_is_atomic() {
        let dir = std::env::temp_dir().join(format!("pi-gguf-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let failed: Result<()> = small().write_file(&path, |tw| {
            tw.write_tensor_data("a", &[0; 68])?;
            Err(werr("generator failed"))
        });
        assert!(failed.is_err());
        assert!(!path.exists());
        let incomplete: Result<()> =
            small().write_file(&path, |tw| tw.write_tensor_data("a", &[0; 68]));
        assert!(incomplete.is_err());
        assert!(!path.exists());
        small()
            .write_file(&path, |tw| -> Result<()> {
                tw.write_tensor_data("a", &[0; 68])?;
                tw.write_tensor_data("b", &[0; 12])
            })
            .unwrap();
        assert_eq!(GgufFile::open(&path).unwrap().tensors.len(), 2);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_into_memory_equals_the_map() {
        let dir = std::env::temp_dir().join(format!("pi-gguf-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        small()
            .write_file(&path, |tw| -> Result<()> {
                tw.write_tensor_data("a", &(0..68).collect::<Vec<u8>>())?;
                tw.write_tensor_data("b", &[9; 12])
            })
            .unwrap();
        let (mapped, read) = (
            GgufFile::open(&path).unwrap(),
            GgufFile::read(&path).unwrap(),
        );
        assert_eq!(read.bytes(), mapped.bytes());
        assert_eq!(read.tensor("a").unwrap().data[..3], [0, 1, 2]);
        assert_eq!(read.tensor("b").unwrap().data, &[9; 12][..]);
        // Tensor data keeps the file's alignment in memory (the kernels rely on it).
        assert_eq!(read.bytes().as_ptr() as usize % 4096, 0);
        std::fs::remove_dir_all(&dir).unwrap();
        let err = GgufFile::read(dir.join("m.gguf")).unwrap_err().to_string();
        assert!(err.contains("m.gguf"), "{err}");
    }

    #[test]
    fn concurrent_writers_of_one_path_do_not_collide() {
        let dir = std::env::temp_dir().join(format!("pi-gguf-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    small()
                        .write_file(&path, |tw| -> Result<()> {
                            tw.write_tensor_data("a", &[3; 68])?;
                            tw.write_tensor_data("b", &[4; 12])
                        })
                        .unwrap()
                });
            }
        });
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.tensor("b").unwrap().data, &[4; 12][..]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
