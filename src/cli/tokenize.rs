//! `powerinfer tokenize`: print a model's tokens for some text, formatted like llama.cpp's
//! `llama-tokenize` so the two can be diffed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use powerinfer::gguf::GgufFile;
use powerinfer::tokenizer::Tokenizer;

/// Tokenize TEXT with a model's tokenizer. Special tokens written in TEXT (such as
/// `<|im_start|>`) become their token ids.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenizeArgs {
    /// GGUF model file whose tokenizer to use.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Print only the ids, as a list like `[1, 2, 3]`.
    #[arg(long)]
    pub ids: bool,
    /// Never add BOS (by default it is added only where the model's metadata asks for it).
    #[arg(long)]
    pub no_bos: bool,
    /// The text to tokenize.
    pub text: String,
}

pub fn run(args: &TokenizeArgs) -> anyhow::Result<()> {
    let file =
        GgufFile::open(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let tok = Tokenizer::from_gguf(&file)
        .with_context(|| format!("building the tokenizer of {}", args.model.display()))?;
    let ids = tok.encode(&args.text, !args.no_bos, true);
    let mut out = std::io::stdout().lock();
    out.write_all(&render(&tok, &ids, args.ids))?;
    out.flush()?;
    Ok(())
}

/// The output text: `[1, 2, 3]` with `ids_only`, else one `    ID -> 'piece'` line per token.
/// Pieces are written as raw bytes, so a token holding part of a UTF-8 character prints
/// exactly those bytes, as llama.cpp does.
pub fn render(tok: &Tokenizer, ids: &[u32], ids_only: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if ids_only {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        out.extend_from_slice(format!("[{}]\n", list.join(", ")).as_bytes());
    } else {
        for &id in ids {
            out.extend_from_slice(format!("{id:6} -> '").as_bytes());
            out.extend_from_slice(tok.token_bytes_ref(id));
            out.extend_from_slice(b"'\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> Option<Tokenizer> {
        let path = powerinfer::paths::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            eprintln!("SKIPPED: {} not found", path.display());
            return None;
        }
        Tokenizer::from_gguf(&GgufFile::open(path).ok()?).ok()
    }

    #[test]
    fn renders_like_llama_tokenize() {
        let Some(tok) = smollm2() else { return };
        let ids = tok.encode("<|im_start|>Hello world!", true, true);
        assert_eq!(render(&tok, &ids, true), b"[1, 19556, 905, 17]\n");
        assert_eq!(
            String::from_utf8(render(&tok, &ids, false)).unwrap(),
            "     1 -> '<|im_start|>'\n 19556 -> 'Hello'\n   905 -> ' world'\n    17 -> '!'\n"
        );
        assert_eq!(render(&tok, &[], true), b"[]\n");
    }

    #[test]
    fn missing_model_is_an_error() {
        let args = TokenizeArgs {
            model: PathBuf::from("/nonexistent/model.gguf"),
            ids: false,
            no_bos: false,
            text: "hi".into(),
        };
        assert!(run(&args).is_err());
    }
}
