//! GGUF: llama.cpp's model file format. A memory-mapped reader and a streaming writer.

mod error;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use reader::{
    align_up, parse_header, GgufFile, Header, TensorInfo, TensorView, DEFAULT_ALIGNMENT, GGUF_MAGIC,
};
pub use value::{Value, ValueType};
pub use writer::{GgufWriter, TensorDataWriter, GGUF_VERSION, MAX_TENSOR_NAME};
