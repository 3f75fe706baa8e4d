use std::path::PathBuf;

/// Everything that can be wrong with a GGUF file. Each message names the problem and, where it
/// helps, the byte offset or tensor involved.
///
/// The I/O variants print their cause in their own message and deliberately do not also expose
/// it as `source()`, or `{:#}` (anyhow's chain) would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("not a GGUF file: bad magic {0:02x?} (expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("truncated GGUF: {what} at byte {offset} needs {need} bytes but the file has {have}")]
    Truncated {
        what: String,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("GGUF {what} count {count} cannot fit in the {remaining} bytes left in the file (truncated or corrupt)")]
    AbsurdCount {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("GGUF string at byte {offset} is not valid UTF-8")]
    BadUtf8 { offset: usize },
    #[error("unknown GGUF metadata value type {id} for key {key:?}")]
    UnknownValueType { id: u32, key: String },
    #[error("GGUF arrays nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("duplicate GGUF metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {name:?} has unsupported type: {ty}")]
    UnknownTensorType { name: String, ty: String },
    #[error("tensor {name:?}: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("general.alignment {0} is not a power of two")]
    BadAlignment(u64),
    #[error("tensor {name:?} data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error(
        "tensor {name:?} data [{start}, {end}) lies past the end of the file ({file_len} bytes)"
    )]
    DataPastEnd {
        name: String,
        start: u64,
        end: u64,
        file_len: usize,
    },
    #[error("metadata key {key:?}: {msg}")]
    Metadata { key: String, msg: String },
    #[error("GGUF writer: {0}")]
    Write(String),
}

impl From<std::io::Error> for GgufError {
    fn from(e: std::io::Error) -> Self {
        GgufError::Io(e)
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
