//! [`Tokenizer`]: a vocabulary read from GGUF metadata plus the matching encoder.

use std::collections::HashSet;

use super::bpe::Bpe;
use super::byte_level;
use super::error::TokenizerError;
use super::fast_hash::FastMap;
use super::pretokenize::PreTokenizer;
use super::special::{Fragment, SpecialMatcher};
use super::spm;
use crate::gguf::{GgufFile, Value};

/// `tokenizer.ggml.token_type` values.
pub mod token_type {
    pub const NORMAL: u8 = 1;
    pub const UNKNOWN: u8 = 2;
    pub const CONTROL: u8 = 3;
    pub const USER_DEFINED: u8 = 4;
    pub const UNUSED: u8 = 5;
    pub const BYTE: u8 = 6;
}
use token_type::*;

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// Token texts llama.cpp treats as end-of-generation whenever the vocabulary has them.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle tokens llama.cpp also stops on: (metadata key, fallback texts).
const FIM_EOG: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<PAD>"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

enum Model {
    /// Byte-level BPE with its pre-tokenizer.
    Bpe { bpe: Box<Bpe>, pre: PreTokenizer },
    /// SentencePiece with byte fallback.
    Spm {
        byte_tokens: Box<[Option<u32>; 256]>,
    },
}

/// A tokenizer built from GGUF metadata alone, matching llama.cpp's token ids.
pub struct Tokenizer {
    model: Model,
    kind: String,
    pieces: Vec<Box<str>>,
    types: Vec<u8>,
    scores: Vec<f32>,
    ids: FastMap<Box<str>, u32>,
    special: SpecialMatcher,
    /// Decoded bytes of every token, concatenated; `byte_offsets[i]..byte_offsets[i + 1]`.
    bytes: Vec<u8>,
    byte_offsets: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eog: HashSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.pieces.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish_non_exhaustive()
    }
}

fn opt_id(f: &GgufFile, key: &str, n: usize) -> Result<Option<u32>, TokenizerError> {
    // Ids outside the vocabulary are ignored, as llama.cpp does.
    Ok(f.get_u64(key)?
        .filter(|&v| (v as usize) < n)
        .map(|v| v as u32))
}

impl Tokenizer {
    /// Build from the `tokenizer.ggml.*` metadata, applying llama.cpp's defaults where keys are
    /// absent so that ids match what llama.cpp would produce for the same file.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let kind = f
            .get_str("tokenizer.ggml.model")?
            .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?
            .to_string();
        if kind != "gpt2" && kind != "llama" {
            return Err(TokenizerError::UnsupportedModel(kind));
        }
        let is_bpe = kind == "gpt2";
        let tokens = f
            .get_array("tokenizer.ggml.tokens")?
            .ok_or(TokenizerError::Missing("tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Malformed {
                key: "tokenizer.ggml.tokens",
                msg: format!("{n} tokens"),
            });
        }
        let mut pieces: Vec<Box<str>> = Vec::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            let s = t.as_str().ok_or_else(|| TokenizerError::Malformed {
                key: "tokenizer.ggml.tokens",
                msg: format!("token {i} is not a string"),
            })?;
            pieces.push(if s.is_empty() {
                format!("[EMPTY_{i}]").into()
            } else {
                s.into()
            });
        }
        let mut types = vec![NORMAL; n];
        if let Some(arr) = f.get_array("tokenizer.ggml.token_type")? {
            if arr.len() < n {
                return Err(TokenizerError::Malformed {
                    key: "tokenizer.ggml.token_type",
                    msg: format!("{} entries for {n} tokens", arr.len()),
                });
            }
            for (t, v) in types.iter_mut().zip(arr) {
                *t = v.as_i64().and_then(|x| u8::try_from(x).ok()).unwrap_or(0);
            }
        }
        let mut scores = vec![0.0f32; n];
        if let Some(arr) = f.get_array("tokenizer.ggml.scores")? {
            if arr.len() < n {
                return Err(TokenizerError::Malformed {
                    key: "tokenizer.ggml.scores",
                    msg: format!("{} entries for {n} tokens", arr.len()),
                });
            }
            for (s, v) in scores.iter_mut().zip(arr) {
                *s = v.as_f64().unwrap_or(0.0) as f32;
            }
        }
        let mut ids: FastMap<Box<str>, u32> =
            FastMap::with_capacity_and_hasher(n, Default::default());
        for (i, p) in pieces.iter().enumerate() {
            ids.entry(p.clone()).or_insert(i as u32);
        }

        // llama.cpp's defaults per tokenizer kind, then the metadata.
        let (mut bos, mut eos) = if is_bpe {
            (Some(11), Some(11))
        } else {
            (Some(1), Some(2))
        };
        bos = bos.filter(|&b| (b as usize) < n);
        eos = eos.filter(|&e| (e as usize) < n);
        let mut add_bos = !is_bpe;
        let mut add_space_prefix = !is_bpe;
        let model = if is_bpe {
            let (pre, defaults) = PreTokenizer::from_name(f.get_str("tokenizer.ggml.pre")?)?;
            add_bos |= defaults.add_bos;
            let merges = f
                .get_array("tokenizer.ggml.merges")?
                .ok_or(TokenizerError::Missing("tokenizer.ggml.merges"))?;
            let lookup = |s: &str| ids.get(s).copied();
            let bpe = Bpe::new(
                merges.iter().filter_map(Value::as_str),
                lookup,
                defaults.ignore_merges,
            );
            Model::Bpe {
                bpe: Box::new(bpe),
                pre,
            }
        } else {
            let mut byte_tokens = [None; 256];
            for (b, slot) in byte_tokens.iter_mut().enumerate() {
                let hex = format!("<0x{b:02X}>");
                *slot = ids.get(hex.as_str()).copied().or_else(|| {
                    let raw = [b as u8];
                    std::str::from_utf8(&raw)
                        .ok()
                        .and_then(|s| ids.get(s).copied())
                });
            }
            // Without a byte token llama.cpp would abort; fall back to the unknown token.
            let unk = opt_id(f, "tokenizer.ggml.unknown_token_id", n)?.or(Some(0));
            for slot in byte_tokens.iter_mut().filter(|s| s.is_none()) {
                *slot = unk;
            }
            Model::Spm {
                byte_tokens: Box::new(byte_tokens),
            }
        };
        if let Some(v) = opt_id(f, "tokenizer.ggml.bos_token_id", n)? {
            bos = Some(v);
        }
        if let Some(v) = opt_id(f, "tokenizer.ggml.eos_token_id", n)? {
            eos = Some(v);
        }
        if let Some(v) = f.get_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        let add_eos = f.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if let Some(v) = f.get_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        if add_bos && bos.is_none() {
            add_bos = false;
        }

        // End-of-generation set. Tokens found by their text are promoted to control type, as
        // llama.cpp does, so that they split out of text as special tokens.
        let mut eog: HashSet<u32> = HashSet::new();
        let mut by_text: Vec<u32> = Vec::new();
        eog.extend(eos);
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eog.extend(opt_id(f, key, n)?);
        }
        for (key, texts) in FIM_EOG {
            match opt_id(f, key, n)? {
                Some(id) => {
                    eog.insert(id);
                }
                None => by_text.extend(texts.iter().find_map(|t| ids.get(*t).copied())),
            }
        }
        by_text.extend(EOG_TEXTS.iter().filter_map(|t| ids.get(*t).copied()));
        for &id in &by_text {
            eog.insert(id);
            if !matches!(types[id as usize], CONTROL | UNKNOWN) {
                types[id as usize] = CONTROL;
            }
        }

        let special = SpecialMatcher::new(pieces.iter().enumerate().filter_map(
            |(i, p)| match types[i] {
                CONTROL | UNKNOWN => Some((i as u32, &**p, true)),
                USER_DEFINED => Some((i as u32, &**p, false)),
                _ => None,
            },
        ));

        let mut bytes = Vec::with_capacity(n * 4);
        let mut byte_offsets = Vec::with_capacity(n + 1);
        byte_offsets.push(0u32);
        for (i, p) in pieces.iter().enumerate() {
            match types[i] {
                NORMAL if is_bpe => byte_level::piece_to_bytes(p, &mut bytes),
                NORMAL => bytes.extend_from_slice(p.replace(SPM_SPACE, " ").as_bytes()),
                BYTE => match parse_byte_token(p) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(p.as_bytes()),
                },
                _ => bytes.extend_from_slice(p.as_bytes()),
            }
            byte_offsets.push(bytes.len() as u32);
        }

        Ok(Tokenizer {
            model,
            kind,
            pieces,
            types,
            scores,
            ids,
            special,
            bytes,
            byte_offsets,
            bos,
            eos,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Token ids for `text`. `add_special` adds BOS/EOS only where the model's metadata asks
    /// for them; `parse_special` turns control-token text such as `<|im_start|>` into that
    /// token (user-defined tokens are always matched, as in llama.cpp).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let fragments = self.special.partition(text, parse_special);
        match &self.model {
            Model::Bpe { bpe, pre } => {
                let lookup = |s: &str| self.ids.get(s).copied();
                let mut words = Vec::new();
                for frag in fragments {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            words.clear();
                            pre.split(t, &mut words);
                            for w in &words {
                                bpe.encode_word(&t.as_bytes()[w.clone()], lookup, &mut out);
                            }
                        }
                    }
                }
            }
            Model::Spm { byte_tokens } => {
                let lookup = |s: &str| {
                    let id = *self.ids.get(s)?;
                    matches!(self.types[id as usize], NORMAL | USER_DEFINED | UNUSED)
                        .then(|| (id, self.scores[id as usize]))
                };
                let byte_token = |b: u8| byte_tokens[b as usize];
                // llama.cpp prefixes a space at the start and after every special token.
                let mut prev_special = true;
                for frag in fragments {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            let s = s.replace(' ', SPM_SPACE);
                            spm::encode(&s, lookup, byte_token, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Text of a token sequence; special tokens appear as their text. The space a
    /// SentencePiece `add_space_prefix` model puts before the first word (at the start or right
    /// after BOS) is removed again, so `decode(encode(s))` gives back `s`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let b = self.token_bytes_ref(id);
            let first_word = i == 0 || (i == 1 && Some(ids[0]) == self.bos);
            if self.add_space_prefix
                && first_word
                && self.token_type(id) == NORMAL
                && b.first() == Some(&b' ')
            {
                bytes.extend_from_slice(&b[1..]);
            } else {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Raw bytes of one token: byte-level spelling undone, `▁` as space, `<0xNN>` as the byte.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.token_bytes_ref(id).to_vec()
    }

    /// [`Tokenizer::token_bytes`] without the copy; empty for ids outside the vocabulary.
    pub fn token_bytes_ref(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i + 1 >= self.byte_offsets.len() {
            return &[];
        }
        &self.bytes[self.byte_offsets[i] as usize..self.byte_offsets[i + 1] as usize]
    }

    /// The vocabulary string as stored; empty for ids outside the vocabulary.
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", |p| p)
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether BOS is prepended when encoding with `add_special`.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// End of generation: EOS, EOT and the chat/FIM stop tokens llama.cpp recognises.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.eog.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// The id of a token given its exact vocabulary string.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// `tokenizer.ggml.token_type` of a token (after llama.cpp's fix-ups); 0 when unknown.
    pub fn token_type(&self, id: u32) -> u8 {
        self.types.get(id as usize).copied().unwrap_or(0)
    }

    /// Whether a token is control or unknown, i.e. not text a model would normally print.
    pub fn is_control(&self, id: u32) -> bool {
        matches!(self.token_type(id), CONTROL | UNKNOWN)
    }
}

fn parse_byte_token(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xZZ>"), None);
        assert_eq!(parse_byte_token("<0x0A"), None);
    }
}
