//! The chat page served at `/`: one self-contained HTML file (no external scripts or
//! styles), built into the binary, that streams answers from `/v1/chat/completions`.

pub const CHAT_PAGE: &str = include_str!("chat.html");
