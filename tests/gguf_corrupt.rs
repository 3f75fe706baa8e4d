//! Bad GGUF input: every named error is reported for the problem it names, nothing panics, and
//! absurd lengths are refused before anything is allocated for them.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use powerinfer::gguf::{parse_header, GgufError, GgufFile, GgufWriter, Value, ValueType};
use powerinfer::quant::GgmlType;

/// Records the largest single allocation made by the current thread, so tests can prove that a
/// forged length does not turn into a huge allocation.
struct PeakAlloc;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Parse `bytes`, returning the result and the largest allocation the parse made.
fn parse_measured(bytes: &[u8]) -> (Result<(), GgufError>, usize) {
    PEAK.with(|p| p.set(0));
    let r = parse_header(bytes).map(|_| ());
    (r, PEAK.with(Cell::get))
}

/// Hand-assembled GGUF bytes, for headers our writer refuses to produce.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A u32 metadata pair.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(ValueType::U32 as u32).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pad to 32 and append `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut b = self.0.clone();
        b.resize(b.len().div_ceil(32) * 32 + n, 0xAB);
        b
    }
}

fn err(bytes: &[u8]) -> GgufError {
    let (r, peak) = parse_measured(bytes);
    assert!(
        peak < 1 << 20,
        "a {}-byte input made a {peak}-byte allocation",
        bytes.len()
    );
    r.expect_err("corrupt input parsed")
}

fn assert_msg(e: &GgufError, needle: &str) {
    assert!(e.to_string().contains(needle), "{e:?} / {e}");
}

/// A small valid file: metadata of several types and two tensors.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama").unwrap();
    w.add("llama.block_count", Value::U32(2)).unwrap();
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(
            ValueType::String,
            vec![Value::String("a".into()), Value::String("bc".into())],
        ),
    )
    .unwrap();
    w.add("general.f", Value::F32(1.0)).unwrap();
    w.add_tensor("token_embd.weight", &[32, 2], GgmlType::Q8_0)
        .unwrap();
    w.add_tensor("output_norm.weight", &[32], GgmlType::F32)
        .unwrap();
    w.to_bytes(&[&[1; 68], &[2; 128]]).unwrap()
}

#[test]
fn valid_file_parses() {
    let (r, _) = parse_measured(&valid_file());
    r.unwrap();
}

#[test]
fn bad_magic() {
    let mut b = valid_file();
    b[..4].copy_from_slice(b"GGML");
    let e = err(&b);
    assert!(matches!(e, GgufError::BadMagic(m) if &m == b"GGML"));
    assert_msg(&e, "bad magic");
}

#[test]
fn unsupported_version() {
    for v in [0, 1, 4, u32::MAX] {
        let e = err(&Raw::header(v, 0, 0).0);
        assert!(matches!(e, GgufError::UnsupportedVersion(x) if x == v));
        assert_msg(&e, &format!("unsupported GGUF version {v}"));
    }
    // Version 2 has the same layout as 3 and is accepted.
    let mut b = valid_file();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    parse_header(&b).unwrap();
}

#[test]
fn truncated_header_at_every_cut_point() {
    let full = valid_file();
    let header_end = GgufFile::from_bytes(full.clone()).unwrap().data_offset;
    let mut truncated = 0;
    for cut in 0..full.len() {
        let e = err(&full[..cut]);
        match e {
            GgufError::Truncated { .. } => {
                truncated += 1;
                assert_msg(&e, "truncated GGUF");
            }
            // Counts are checked against the bytes left, so a cut can also show as an absurd count.
            GgufError::AbsurdCount { .. } => assert_msg(&e, "cannot fit"),
            // A cut in the padding or data section leaves the tensors past the end.
            GgufError::DataPastEnd { .. } => {
                assert!(cut >= header_end - 32, "cut {cut}: {e}");
                assert_msg(&e, "past the end of the file");
            }
            e => panic!("cut {cut}: unexpected {e}"),
        }
    }
    assert!(truncated > 50, "{truncated} cuts reported as truncation");
}

#[test]
fn tensor_data_past_end_of_file() {
    let full = valid_file();
    let e = err(&full[..full.len() - 1]);
    assert!(matches!(&e, GgufError::DataPastEnd { name, .. } if name == "output_norm.weight"));
    assert_msg(&e, "past the end of the file");

    // An offset so large that offset + size overflows u64.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], GgmlType::F32.id(), u64::MAX - 31);
    let e = err(&r.data(32));
    assert!(matches!(e, GgufError::DataPastEnd { .. }), "{e}");
}

#[test]
fn misaligned_offset() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1], GgmlType::F32.id(), 4);
    let e = err(&r.data(64));
    assert!(matches!(&e, GgufError::Misaligned { name, offset: 4, alignment: 32 } if name == "t"));
    assert_msg(&e, "not a multiple of the alignment 32");
}

#[test]
fn bad_alignment_value() {
    for a in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        let e = err(&r.0);
        assert!(matches!(e, GgufError::BadAlignment(x) if x == a as u64));
        assert_msg(&e, "not a power of two");
    }
}

#[test]
fn unknown_tensor_type_id() {
    for (id, needle) in [(4u32, "unknown type id 4"), (23, "IQ4_XS"), (9999, "9999")] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("blk.0.ffn_up.weight", &[256], id, 0);
        let e = err(&r.data(1024));
        assert!(
            matches!(&e, GgufError::UnknownTensorType { name, .. } if name == "blk.0.ffn_up.weight")
        );
        assert_msg(&e, needle);
    }
}

#[test]
fn bad_tensor_shapes() {
    for (dims, needle) in [
        (&[][..], "0 dimensions"),
        (&[1, 1, 1, 1, 1][..], "5 dimensions"),
        (&[0][..], "bad shape"),
        (&[1 << 32, 1 << 32][..], "bad shape"),
    ] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("t", dims, GgmlType::F32.id(), 0);
        let e = err(&r.data(64));
        assert!(matches!(e, GgufError::BadTensor { .. }), "{e}");
        assert_msg(&e, needle);
    }
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[33], GgmlType::Q4_0.id(), 0);
    assert_msg(
        &err(&r.data(64)),
        "not a multiple of the Q4_0 block length 32",
    );
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::header(3, 0, 1);
    r.str("general.weird").u32(13).u32(0);
    let e = err(&r.0);
    assert!(matches!(&e, GgufError::UnknownValueType { id: 13, key } if key == "general.weird"));
    assert_msg(&e, "unknown GGUF metadata value type 13");

    let mut r = Raw::header(3, 0, 1);
    r.str("general.arr")
        .u32(ValueType::Array as u32)
        .u32(77)
        .u64(1);
    assert_msg(&err(&r.0), "unknown GGUF metadata value type 77");
}

#[test]
fn absurd_counts_fail_fast_without_allocating() {
    let huge = 1u64 << 60;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("tensor count", Raw::header(3, huge, 0).0),
        ("metadata count", Raw::header(3, 0, huge).0),
        ("both counts", Raw::header(3, u64::MAX, u64::MAX).0),
    ];
    let mut r = Raw::header(3, 0, 1);
    r.u64(huge); // key length
    cases.push(("key length", r.0));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(ValueType::String as u32).u64(huge);
    cases.push(("string length", r.0));
    for elem in [
        ValueType::U8,
        ValueType::U64,
        ValueType::String,
        ValueType::Array,
    ] {
        let mut r = Raw::header(3, 0, 1);
        r.str("k")
            .u32(ValueType::Array as u32)
            .u32(elem as u32)
            .u64(huge);
        cases.push(("array length", r.0));
    }
    let mut r = Raw::header(3, 1, 0);
    r.u64(u64::MAX); // tensor name length
    cases.push(("tensor name length", r.0));
    // A count that fits a 4 KB file only if each element took no space.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(ValueType::Array as u32).u32(0).u64(1 << 20);
    r.0.resize(4096, 0);
    cases.push(("array length", r.0));

    for (what, bytes) in cases {
        let t = Instant::now();
        let e = err(&bytes);
        assert!(t.elapsed() < Duration::from_millis(100), "{what}");
        assert!(
            matches!(e, GgufError::AbsurdCount { .. }),
            "{what}: expected an absurd-count error, got {e}"
        );
        assert_msg(&e, "cannot fit in the");
    }
}

#[test]
fn arrays_nested_too_deep() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k");
    r.u32(ValueType::Array as u32);
    for _ in 0..20 {
        r.u32(ValueType::Array as u32).u64(1);
    }
    r.u32(ValueType::U8 as u32).u64(0);
    let e = err(&r.0);
    assert!(matches!(e, GgufError::TooDeep(8)), "{e}");
    assert_msg(&e, "nested deeper than 8");
}

#[test]
fn invalid_utf8_string() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(2);
    r.0.extend_from_slice(&[0xC3, 0x28]);
    r.u32(ValueType::U8 as u32);
    r.0.push(0);
    let e = err(&r.0);
    assert!(matches!(e, GgufError::BadUtf8 { offset: 32 }), "{e}");
    assert_msg(&e, "not valid UTF-8");
}

#[test]
fn duplicate_keys_and_tensors() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("llama.block_count", 1)
        .kv_u32("llama.block_count", 2);
    let e = err(&r.0);
    assert!(matches!(&e, GgufError::DuplicateKey(k) if k == "llama.block_count"));
    assert_msg(&e, "duplicate GGUF metadata key \"llama.block_count\"");

    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[8], GgmlType::F32.id(), 0)
        .tensor("w", &[8], GgmlType::F32.id(), 32);
    let e = err(&r.data(64));
    assert!(matches!(&e, GgufError::DuplicateTensor(n) if n == "w"));
    assert_msg(&e, "duplicate tensor name \"w\"");
}

#[test]
fn metadata_type_mismatch_names_the_key() {
    let f = GgufFile::from_bytes(valid_file()).unwrap();
    let e = f.get_u64("general.architecture").unwrap_err();
    assert_msg(&e, "general.architecture");
    let e = f
        .require("llama.context_length", f.get_u64("llama.context_length"))
        .unwrap_err();
    assert_msg(&e, "\"llama.context_length\": missing");
}

/// splitmix64: a tiny deterministic PRNG so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Apply 1-4 random mutations: bit flips, byte sets, length-field smashes, truncation.
/// Positions are drawn from `hot` (where the length fields live) half of the time.
fn mutate(rng: &mut Rng, base: &[u8], hot: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let pos = if rng.below(2) == 0 && !hot.is_empty() {
            let r = &hot[rng.below(hot.len())];
            (r.start + rng.below(r.len())).min(b.len() - 1)
        } else {
            rng.below(b.len())
        };
        match rng.below(6) {
            0 => b[pos] ^= 1 << rng.below(8),
            1 => b[pos] = [0, 0xFF, 0x7F, 0x80, rng.next() as u8][rng.below(5)],
            2 | 3 => {
                let v: u64 = [
                    0,
                    1,
                    u64::MAX,
                    1 << 60,
                    1 << 32,
                    u32::MAX as u64,
                    rng.next(),
                    rng.next() % 4096,
                ][rng.below(8)];
                let width = if rng.below(2) == 0 { 8 } else { 4 };
                let end = (pos + width).min(b.len());
                let n = end - pos;
                b[pos..end].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            4 => b.truncate(pos),
            _ => b.insert(pos, rng.next() as u8),
        }
    }
    b
}

/// Parse `n` mutated copies of `base`; a panic or an allocation out of proportion to the input
/// fails the test.
fn fuzz_parse(label: &str, base: &[u8], hot: &[std::ops::Range<usize>], n: usize, seed: u64) {
    let mut rng = Rng(seed);
    let (mut ok, mut errs) = (0, 0);
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let b = mutate(&mut rng, base, hot);
        let t1 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let (r, peak) = parse_measured(&b);
            // The one allocation that scales with the input: a Vec<Value> of at most one
            // element per remaining byte.
            assert!(
                peak <= 64 * b.len() + (1 << 16),
                "{label} #{i}: {peak}-byte allocation for a {}-byte input",
                b.len()
            );
            if r.is_ok() {
                // A file that parses must also open and hand out every tensor.
                let f = GgufFile::from_bytes(b.clone()).unwrap();
                for t in &f.tensors {
                    let v = f.view(t);
                    assert_eq!(v.data.len(), t.n_bytes());
                }
                for (_, v) in &f.metadata {
                    let _ = v.to_string();
                }
            }
            r
        }));
        slowest = slowest.max(t1.elapsed());
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                errs += 1;
                assert!(!e.to_string().is_empty());
            }
            Err(_) => panic!("{label}: mutation #{i} (seed {seed}) panicked"),
        }
    }
    eprintln!(
        "{label}: {n} mutations, {ok} parsed, {errs} errors, {:?} total, slowest {slowest:?}",
        t.elapsed()
    );
    assert!(errs > 0, "mutations never produced an error");
}

#[test]
fn mutated_written_headers_never_panic() {
    let base = valid_file();
    let header_end = GgufFile::from_bytes(base.clone()).unwrap().data_offset;
    let hot = 0..header_end;
    fuzz_parse(
        "written header",
        &base,
        std::slice::from_ref(&hot),
        20_000,
        1,
    );
}

#[test]
fn mutated_real_header_never_panics() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    // The real header (tokenizer and all) followed by a short data section: the tensors are
    // re-declared as one block each so the file stays small while every metadata value,
    // tensor name and type is the model's own.
    let mut w = GgufWriter::new();
    for (k, v) in &f.metadata {
        w.add(k.clone(), v.clone()).unwrap();
    }
    for t in &f.tensors {
        w.add_tensor(t.name.clone(), &[t.ty.block_len() as u64], t.ty)
            .unwrap();
    }
    let data: Vec<Vec<u8>> = w.tensors().iter().map(|t| vec![0; t.n_bytes()]).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let base = w.to_bytes(&refs).unwrap();
    let small = GgufFile::from_bytes(base.clone()).unwrap();
    // Hot spots: the scalar metadata before the vocabulary, the starts of the big arrays and
    // the tensor infos at the end of the header.
    assert_eq!(small.metadata, f.metadata);
    let header_end = small.data_offset;
    let hot = [0..1100, header_end - 20_000..header_end];
    fuzz_parse("smollm2 header", &base, &hot, 600, 2);
    // The untouched prefix of the real file (header only): tensors lie past its end.
    let prefix = &f.bytes()[..f.data_offset];
    assert!(matches!(
        parse_header(prefix),
        Err(GgufError::DataPastEnd { .. })
    ));
    fuzz_parse("smollm2 raw prefix", prefix, &hot, 200, 3);
}
