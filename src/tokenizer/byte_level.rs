//! GPT-2's reversible byte-to-character mapping used by byte-level BPE vocabularies: printable
//! Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order, so every
//! byte string has a printable spelling in the vocabulary.

const fn printable(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

const fn build_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    let mut b = 0u32;
    while b < 256 {
        let cp = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

const fn build_extra_to_byte() -> [u8; 68] {
    let mut table = [0u8; 68];
    let mut extra = 0usize;
    let mut b = 0u32;
    while b < 256 {
        if !printable(b) {
            table[extra] = b as u8;
            extra += 1;
        }
        b += 1;
    }
    table
}

/// The character that spells byte `b` in a byte-level vocabulary.
pub(crate) static BYTE_TO_CHAR: [char; 256] = build_byte_to_char();
static EXTRA_TO_BYTE: [u8; 68] = build_extra_to_byte();

/// The byte a vocabulary character stands for, or `None` for characters outside the mapping.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 && printable(cp) {
        Some(cp as u8)
    } else if (256..256 + 68).contains(&cp) {
        Some(EXTRA_TO_BYTE[(cp - 256) as usize])
    } else {
        None
    }
}

/// Raw bytes of a byte-level vocabulary piece; characters outside the mapping pass through as
/// their own UTF-8 so that nothing is silently lost.
pub(crate) fn piece_to_bytes(piece: &str, out: &mut Vec<u8>) {
    for c in piece.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'A' as usize], 'A');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
    }
}
