//! The output types `powerinfer quantize` writes, their llama.cpp file-type codes, and the
//! fallback for rows that are not a whole number of the type's blocks.

use super::QuantizeError;
use crate::quant::GgmlType;

/// Names accepted for the main (4-bit or 8-bit) type.
pub const TYPE_NAMES: &str = "q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q6_k, f16";
/// Names accepted for the type the most sensitive matrices keep under `--ratio`.
pub const KEEP_NAMES: &str = "f16, q8_0";

/// Parse an output type name (case-insensitive).
pub fn parse_type(name: &str) -> Result<GgmlType, QuantizeError> {
    use GgmlType::*;
    let ty = match name.to_ascii_lowercase().as_str() {
        "q4_0" => Q4_0,
        "q4_1" => Q4_1,
        "q5_0" => Q5_0,
        "q5_1" => Q5_1,
        "q8_0" => Q8_0,
        "q4_k" => Q4_K,
        "q6_k" => Q6_K,
        "f16" => F16,
        _ => {
            return Err(QuantizeError::UnknownType {
                name: name.to_string(),
                expected: TYPE_NAMES,
            })
        }
    };
    Ok(ty)
}

/// Parse the `--keep` type: only the 8-bit and 16-bit types make sense there.
pub fn parse_keep(name: &str) -> Result<GgmlType, QuantizeError> {
    match name.to_ascii_lowercase().as_str() {
        "f16" => Ok(GgmlType::F16),
        "q8_0" => Ok(GgmlType::Q8_0),
        _ => Err(QuantizeError::UnknownType {
            name: name.to_string(),
            expected: KEEP_NAMES,
        }),
    }
}

/// llama.cpp's `general.file_type` code for a file mostly of `ty` (its `llama_ftype`;
/// Q4_K is recorded as Q4_K_S and Q6_K as Q6_K, the uniform variants).
pub fn file_type(ty: GgmlType) -> u32 {
    use GgmlType::*;
    match ty {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q8_0 => 7,
        Q5_0 => 8,
        Q5_1 => 9,
        Q4_K => 14,
        Q6_K => 18,
        BF16 => 32,
        // Not an output type; "guessed" in llama.cpp's terms.
        _ => 1024,
    }
}

/// The type a row of `row_len` elements gets when `ty` was asked for: `ty` itself when the
/// row is a whole number of its blocks, else a compatible type of 32-element blocks of no
/// lower precision (as llama.cpp does: Q4_K→Q5_0, Q6_K→Q8_0), else F16.
pub fn fit_type(ty: GgmlType, row_len: usize) -> GgmlType {
    use GgmlType::*;
    if row_len.is_multiple_of(ty.block_len()) {
        return ty;
    }
    let alt = match ty {
        Q4_K => Q5_0,
        Q6_K => Q8_0,
        _ => F16,
    };
    if row_len.is_multiple_of(alt.block_len()) {
        alt
    } else {
        F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_refused() {
        assert_eq!(parse_type("Q4_K").unwrap(), GgmlType::Q4_K);
        assert_eq!(parse_type("q6_k").unwrap(), GgmlType::Q6_K);
        assert!(parse_type("q3_k").is_err());
        assert!(parse_keep("q4_0").is_err());
        assert_eq!(parse_keep("F16").unwrap(), GgmlType::F16);
    }

    #[test]
    fn rows_that_do_not_fit_fall_back() {
        use GgmlType::*;
        assert_eq!(fit_type(Q4_K, 1536), Q4_K);
        assert_eq!(fit_type(Q4_K, 576), Q5_0);
        assert_eq!(fit_type(Q6_K, 576), Q8_0);
        assert_eq!(fit_type(Q8_0, 100), F16);
        assert_eq!(fit_type(Q4_K, 100), F16);
    }
}
