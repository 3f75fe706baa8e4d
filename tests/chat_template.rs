//! Chat templates: the real SmolLM2 and Qwen2.5 templates (committed copies under
//! tests/data/templates, checked against the models when present), the plain fallback and
//! error handling.
mod common;

use powerinfer::generate::{ChatMessage, ChatTemplate, TemplateError};
use powerinfer::gguf::GgufFile;

fn template_source(name: &str) -> String {
    let p = common::data_path(&format!("templates/{name}.jinja"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn smollm2() -> ChatTemplate {
    ChatTemplate::new(&template_source("smollm2"), "<|im_start|>", "<|im_end|>").unwrap()
}

fn qwen05() -> ChatTemplate {
    ChatTemplate::new(&template_source("qwen05"), "", "<|im_end|>").unwrap()
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

const SMOL_SYSTEM: &str =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
const QWEN_SYSTEM: &str =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";

#[test]
fn committed_templates_equal_the_models_templates() {
    for (model, name) in [("smollm2", "smollm2"), ("qwen05", "qwen05")] {
        let Some(p) = common::model(model) else {
            continue;
        };
        let f = GgufFile::open(&p).unwrap();
        let src = f.get_str("tokenizer.chat_template").unwrap().unwrap();
        assert_eq!(src, template_source(name), "{model}");
    }
    if let Some(p) = common::model("gemma3") {
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.get_str("tokenizer.chat_template").unwrap(), None);
    }
}

/// The prompts llama.cpp's golden outputs were made with, against what the models' own
/// templates render. Qwen's matches once the golden system message is passed; SmolLM2's
/// template always adds a system turn (its default one), which the golden prompt lacks.
#[test]
fn gguf_templates_against_golden_prompts() {
    let load = |model: &str| {
        let p = common::model(model)?;
        let f = GgufFile::open(&p).unwrap();
        let src = f.get_str("tokenizer.chat_template").unwrap();
        Some(ChatTemplate::from_gguf_source(src, "", "<|im_end|>").unwrap())
    };
    if let Some(t) = load("smollm2") {
        let golden =
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
        let out = t
            .render(&[msg("user", "What is the capital of France?")], true)
            .unwrap();
        assert_eq!(out, format!("{SMOL_SYSTEM}{golden}"));
    }
    if let Some(t) = load("qwen05") {
        let golden = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
                      <|im_start|>user\nWhat does HTTP stand for?<|im_end|>\n\
                      <|im_start|>assistant\n";
        let msgs = [
            msg("system", "You are a helpful assistant."),
            msg("user", "What does HTTP stand for?"),
        ];
        assert_eq!(t.render(&msgs, true).unwrap(), golden);
    }
    if let Some(p) = common::model("gemma3") {
        let f = GgufFile::open(&p).unwrap();
        let src = f.get_str("tokenizer.chat_template").unwrap();
        let t = ChatTemplate::from_gguf_source(src, "<bos>", "<eos>").unwrap();
        assert!(t.is_plain());
    }
}

#[test]
fn smollm2_single_turn_adds_default_system_prompt() {
    let t = smollm2();
    let out = t
        .render(&[msg("user", "What is the capital of France?")], true)
        .unwrap();
    assert_eq!(
        out,
        format!(
            "{SMOL_SYSTEM}<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
    );
    let no_gen = t
        .render(&[msg("user", "What is the capital of France?")], false)
        .unwrap();
    assert_eq!(
        no_gen,
        format!("{SMOL_SYSTEM}<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
    );
}

#[test]
fn smollm2_with_system_and_multi_turn() {
    let msgs = [
        msg("system", "Be brief."),
        msg("user", "Hi"),
        msg("assistant", "Hello!"),
        msg("user", "2+2?"),
    ];
    let out = smollm2().render(&msgs, true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\n2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn qwen_single_turn_with_and_without_system() {
    let t = qwen05();
    let out = t
        .render(&[msg("user", "What does HTTP stand for?")], true)
        .unwrap();
    assert_eq!(
        out,
        format!(
            "{QWEN_SYSTEM}<|im_start|>user\nWhat does HTTP stand for?<|im_end|>\n<|im_start|>assistant\n"
        )
    );
    // With the golden prompts' system message the render is exactly llama.cpp's prompt.
    let out = t
        .render(
            &[
                msg("system", "You are a helpful assistant."),
                msg("user", "What does HTTP stand for?"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWhat does HTTP stand for?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn qwen_multi_turn() {
    let msgs = [
        msg("user", "Write hello world in C."),
        msg("assistant", "printf(\"hello\\n\");"),
        msg("user", "And in Rust?"),
    ];
    let out = qwen05().render(&msgs, true).unwrap();
    assert_eq!(
        out,
        format!(
            "{QWEN_SYSTEM}<|im_start|>user\nWrite hello world in C.<|im_end|>\n\
             <|im_start|>assistant\nprintf(\"hello\\n\");<|im_end|>\n\
             <|im_start|>user\nAnd in Rust?<|im_end|>\n\
             <|im_start|>assistant\n"
        )
    );
}

/// The chat command feeds only the text a new turn adds, so a conversation's render must be
/// a prefix of the render with one more message.
#[test]
fn renders_grow_by_appending() {
    let convo = [
        msg("system", "You answer in one word."),
        msg("user", "Capital of France?"),
        msg("assistant", "Paris."),
        msg("user", "And of Italy?"),
        msg("assistant", "Rome."),
    ];
    for (name, t) in [
        ("smollm2", smollm2()),
        ("qwen05", qwen05()),
        ("plain", ChatTemplate::plain()),
    ] {
        for start in [0, 1] {
            let convo = &convo[start..];
            for n in 1..convo.len() {
                let a = t.render(&convo[..n], false).unwrap();
                let b = t.render(&convo[..n + 1], false).unwrap();
                assert!(
                    b.starts_with(&a),
                    "{name} start {start} n {n}:\n{a:?}\n{b:?}"
                );
                // The generation prompt followed by the assistant's reply is also a prefix.
                if convo[n].role == "assistant" {
                    let g = t.render(&convo[..n], true).unwrap();
                    let fed = format!("{g}{}", convo[n].content);
                    assert!(b.starts_with(&fed), "{name} start {start} n {n}");
                }
            }
        }
    }
}

#[test]
fn plain_fallback_format() {
    let t = ChatTemplate::from_gguf_source(None, "<bos>", "<eos>").unwrap();
    assert!(t.is_plain());
    assert_eq!(
        t.render(&[msg("user", "Once upon a time")], true).unwrap(),
        "Once upon a time\n\n"
    );
    assert_eq!(
        t.render(
            &[msg("system", "S"), msg("user", "U"), msg("assistant", "A")],
            false
        )
        .unwrap(),
        "S\n\nU\n\nA\n\n"
    );
    assert_eq!(t.render(&[], true).unwrap(), "");
}

#[test]
fn bos_eos_and_python_string_methods_are_available() {
    let src = "{{ bos_token }}{% for m in messages %}{{ m.role.upper() }}: {{ m.content.strip() }}\
               {% if m.content.startswith(' ') %}(indented){% endif %}{{ eos_token }}{% endfor %}\
               {% if add_generation_prompt %}BOT:{% endif %}";
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    let out = t
        .render(&[msg("user", "  hi  "), msg("assistant", "yo")], true)
        .unwrap();
    assert_eq!(out, "<s>USER: hi(indented)</s>ASSISTANT: yo</s>BOT:");
}

#[test]
fn trim_and_lstrip_blocks_like_transformers() {
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(&[msg("user", "a"), msg("user", "b")], false)
            .unwrap(),
        "[a]\n[b]\n"
    );
}

#[test]
fn tojson_uses_python_separators_without_html_escaping() {
    let t = ChatTemplate::new("{{ messages[0] | tojson }}", "", "").unwrap();
    assert_eq!(
        t.render(&[msg("user", "a<b> & 'c' é")], false).unwrap(),
        r#"{"role": "user", "content": "a<b> & 'c' é"}"#
    );
}

#[test]
fn tojson_indent_and_loop_controls() {
    let src = "{{ messages[0] | tojson(indent=2) }}|{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(&[msg("user", "a"), msg("user", "b")], false)
            .unwrap(),
        "{\n  \"role\": \"user\",\n  \"content\": \"a\"\n}|a"
    );
}

#[test]
fn raise_exception_becomes_an_error() {
    let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(t.render(&[msg("user", "x")], false).unwrap(), "ok");
    match t.render(&[msg("assistant", "x")], false) {
        Err(TemplateError::Raised(m)) => assert_eq!(m, "first message must be from the user"),
        other => panic!("expected Raised, got {other:?}"),
    }
}

#[test]
fn strftime_now_is_available() {
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
    let year: i32 = t.render(&[], false).unwrap().parse().unwrap();
    assert!((2024..3000).contains(&year));
}

#[test]
fn malformed_templates_are_errors_not_panics() {
    for bad in [
        "{% for m in messages %}",
        "{{ messages[0].content ",
        "{% if %}x{% endif %}",
        "{% endfor %}",
    ] {
        match ChatTemplate::new(bad, "", "") {
            Err(TemplateError::Compile(_)) => {}
            Err(e) => panic!("{bad:?}: wrong error {e}"),
            Ok(_) => panic!("{bad:?} compiled"),
        }
    }
    // The real Qwen template indexes messages[0]: an empty conversation is an error.
    assert!(matches!(
        qwen05().render(&[], true),
        Err(TemplateError::Render(_))
    ));
    // Compiles, but fails at render time.
    let t = ChatTemplate::new("{{ messages[0].content + 1 }}", "", "").unwrap();
    assert!(matches!(
        t.render(&[msg("user", "x")], false),
        Err(TemplateError::Render(_))
    ));
}

#[test]
fn template_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ChatTemplate>();
}
