//! Memory-mapped GGUF reader (versions 2 and 3).
//!
//! The header is parsed into owned metadata and tensor infos; tensor data stays in the map and
//! is handed out as borrowed byte slices, so slicing single rows out of a weight matrix costs
//! nothing. Every length read from the file is checked against the bytes that remain before
//! anything is allocated for it.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use super::error::{GgufError, Result};
use super::value::{Value, ValueType};
use crate::huge_vec::HugeVec;
use crate::quant::GgmlType;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub(crate) const MAX_ARRAY_DEPTH: usize = 8;
const MAX_DIMS: u32 = 4;

/// Description of one tensor in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the length of a row (contiguous), `dims[1]` the number of rows.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements in one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Number of rows (product of all dims after the first).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.row_len()).unwrap_or(0)
    }

    pub fn n_bytes(&self) -> usize {
        self.row_bytes() * self.n_rows()
    }
}

/// Zero-copy view of a tensor's data in the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn ty(&self) -> GgmlType {
        self.info.ty
    }
    pub fn name(&self) -> &'a str {
        &self.info.name
    }
    pub fn dims(&self) -> &'a [u64] {
        &self.info.dims
    }
    pub fn row_len(&self) -> usize {
        self.info.row_len()
    }
    pub fn n_rows(&self) -> usize {
        self.info.n_rows()
    }
    pub fn row_bytes(&self) -> usize {
        self.info.row_bytes()
    }
    /// The bytes of row `i` (one neuron's weights for an FFN matrix).
    pub fn row(&self, i: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }
    /// The bytes of rows `start..end`.
    pub fn rows(&self, start: usize, end: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[start * rb..end * rb]
    }
}

/// Backing bytes: a read-only map of the file, the file read into anonymous memory, or an
/// owned buffer (tests, fuzzing).
enum Storage {
    Mmap(memmap2::Mmap),
    /// The file read into anonymous memory (see [`GgufFile::read`]).
    Memory(HugeVec<u8>),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Memory(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file.
pub struct GgufFile {
    storage: Storage,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset where tensor data begins.
    pub data_offset: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map and parse a file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|cause| GgufError::Open {
            path: path.to_path_buf(),
            cause,
        })?;
        // SAFETY: the map is read-only; like every mmap-based model loader we assume the file is
        // not truncated by another process while we run.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|cause| GgufError::Open {
            path: path.to_path_buf(),
            cause,
        })?;
        // Pages read from disk through this map then come in 2 MiB folios that the kernel
        // maps in 2 MiB pages (Linux 6.x on ext4 and others), whatever the access pattern:
        // without it, the scattered faults of sparse decoding read small folios, and 4 KiB
        // pages cost TLB misses. A hint: an error only means it does not apply.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Self::parse(Storage::Mmap(map))
    }

    /// Read a whole file into anonymous memory and parse it (llama.cpp's `--no-mmap`). Slower
    /// to load than [`GgufFile::open`] and not shared with other processes, but on Linux the
    /// memory is 2 MiB-aligned and advised for transparent huge pages, where a mapped file
    /// gets 2 MiB pages only for what its page cache holds in large folios (kernel and file
    /// system permitting): decoding, which streams every weight once per token and gathers
    /// scattered rows in sparse mode, then misses the TLB 512 times less often.
    pub fn read(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let open_err = |cause| GgufError::Open {
            path: path.to_path_buf(),
            cause,
        };
        let mut file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len() as usize;
        let mut buf = HugeVec::<u8>::try_zeroed(len).map_err(open_err)?;
        std::io::Read::read_exact(&mut file, &mut buf).map_err(open_err)?;
        Self::parse(Storage::Memory(buf))
    }

    /// Parse a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<GgufFile> {
        let header = parse_header(&storage)?;
        Ok(GgufFile {
            storage,
            version: header.version,
            meta_index: index_of(header.metadata.iter().map(|(k, _)| k.as_str())),
            metadata: header.metadata,
            tensor_index: index_of(header.tensors.iter().map(|t| t.name.as_str())),
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.storage
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| GgufError::Metadata {
                key: key.to_string(),
                msg: format!("expected {want}, found {:?}", v.value_type()),
            }),
        }
    }

    /// An unsigned integer value (any integer width); `Ok(None)` when absent.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "an unsigned integer", Value::as_u64)
    }

    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        Ok(self.get_u64(key)?.map(|v| v as usize))
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", Value::as_f64)
    }

    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        Ok(self.get_f64(key)?.map(|v| v as f32))
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        self.typed(key, "an array", Value::as_array)
    }

    /// A required key: an error naming the key when it is missing.
    pub fn require<T>(&self, key: &str, got: Result<Option<T>>) -> Result<T> {
        got?.ok_or_else(|| GgufError::Metadata {
            key: key.to_string(),
            msg: "missing".to_string(),
        })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Zero-copy view of a tensor's data.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| self.view(info))
    }

    /// View of a tensor info belonging to this file. Bounds were checked at parse time.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = self.data_offset + info.offset as usize;
        TensorView {
            info,
            data: &self.storage[start..start + info.n_bytes()],
        }
    }
}

fn index_of<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.to_string(), i)).collect()
}

/// The parsed header of a GGUF file.
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: usize,
}

/// Parse and validate the header of a whole GGUF file held in `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.take(4, "magic")?.try_into().unwrap();
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    c.check_count("metadata", n_kv, 13)?;
    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    c.check_count("tensor", n_tensors, 24)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut seen = HashMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty_id = c.u32("metadata value type")?;
        let ty = ValueType::from_id(ty_id).ok_or_else(|| GgufError::UnknownValueType {
            id: ty_id,
            key: key.clone(),
        })?;
        let value = c.value(ty, &key, 0)?;
        if seen.insert(key.clone(), ()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let a = v.as_u64().ok_or_else(|| GgufError::Metadata {
                key: "general.alignment".into(),
                msg: format!("expected an unsigned integer, found {:?}", v.value_type()),
            })?;
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment(a));
            }
            a
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashMap::new();
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadTensor {
                name,
                msg: format!("{n_dims} dimensions (1 to {MAX_DIMS} supported)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let ty_id = c.u32("tensor type")?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            ty: GgmlType::describe_id(ty_id),
        })?;
        let offset = c.u64("tensor offset")?;
        if names.insert(name.clone(), ()).is_some() {
            return Err(GgufError::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }

    let data_offset = align_up(c.pos as u64, alignment);
    let file_len = bytes.len();
    for t in &tensors {
        let n_elements = t
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| GgufError::BadTensor {
                name: t.name.clone(),
                msg: format!("bad shape {:?}", t.dims),
            })?;
        if t.dims[0] % t.ty.block_len() as u64 != 0 {
            return Err(GgufError::BadTensor {
                name: t.name.clone(),
                msg: format!(
                    "row length {} is not a multiple of the {} block length {}",
                    t.dims[0],
                    t.ty,
                    t.ty.block_len()
                ),
            });
        }
        if t.offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let size = (n_elements / t.ty.block_len() as u64).checked_mul(t.ty.block_bytes() as u64);
        let end = size
            .and_then(|s| s.checked_add(t.offset))
            .and_then(|e| e.checked_add(data_offset));
        match end {
            Some(end) if end <= file_len as u64 => {}
            _ => {
                return Err(GgufError::DataPastEnd {
                    name: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset: data_offset as usize,
    })
}

pub fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn check_count(&self, what: &'static str, count: u64, min_size: usize) -> Result<()> {
        if count.saturating_mul(min_size as u64) > self.remaining() as u64 {
            return Err(GgufError::AbsurdCount {
                what,
                count,
                remaining: self.remaining(),
            });
        }
        Ok(())
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().unwrap())
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        self.check_count("string byte", len, 1)?;
        let start = self.pos;
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::BadUtf8 { offset: start })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
        let what = "metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.arr(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            ValueType::Bool => Value::Bool(self.arr::<1>(what)?[0] != 0),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.arr(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep(MAX_ARRAY_DEPTH));
                }
                let elem_id = self.u32("array element type")?;
                let elem =
                    ValueType::from_id(elem_id).ok_or_else(|| GgufError::UnknownValueType {
                        id: elem_id,
                        key: key.to_string(),
                    })?;
                let n = self.u64("array length")?;
                self.check_count("array element", n, elem.min_size())?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}
