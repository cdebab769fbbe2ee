//! Reader for `torch.save` zip archives (PyTorch >= 1.6), without libtorch or Python.
//!
//! An archive holds `<root>/data.pkl` (a pickle of the saved object), one `<root>/data/<key>`
//! entry per storage, and `<root>/byteorder`. A small pickle machine (protocols 2-5, plus the
//! protocol 0/1 opcodes that cost nothing) rebuilds the object; tensors become lazy references
//! (`_rebuild_tensor_v2(storage, offset, size, stride, ...)`) and only those of the chosen state
//! dict are read. Classes it does not model (`argparse.Namespace`, numpy scalars, ...) become
//! opaque objects, so training checkpoints with extra entries still load.
//!
//! Which state dict: the top-level dict if it holds tensors, else the first of its `model`,
//! `model_ema`, `state_dict` entries that holds tensors (official SLaK/ConvNeXt checkpoints use
//! `model`, timm/Lightning use `state_dict`). A `module.` prefix (DataParallel/DDP) is stripped
//! when every key has it; non-tensor entries are skipped. Floats are widened to f32, integers
//! and bools to i64; non-contiguous views are materialised contiguous.

use super::{FormatError, StateDict};
use crate::tensor::{HostData, HostTensor};
use crate::ModelError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::rc::Rc;

/// Entries tried, in order, when the top level is not itself a state dict.
pub const STATE_DICT_ENTRIES: [&str; 3] = ["model", "model_ema", "state_dict"];

/// Reads a `torch.save` zip archive into a state dict (see the module doc for which one).
pub fn read_pth(path: &Path) -> Result<StateDict, ModelError> {
    let err = |msg: String| FormatError::Invalid(msg).at(path);
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut head = Vec::with_capacity(4);
    (&mut file)
        .take(4)
        .read_to_end(&mut head)
        .map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if !head.starts_with(b"PK") {
        return Err(err(if head.first() == Some(&0x80) {
            "legacy (pre-1.6, non-zip) torch.save format; re-save it with torch>=1.6: \
             torch.save(torch.load(old, map_location='cpu'), new)"
                .into()
        } else {
            "not a PyTorch checkpoint: not a zip archive (torch.save writes zip archives since torch 1.6)".into()
        }));
    }
    file.rewind().map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| FormatError::Zip(e).at(path))?;
    read_archive(&mut zip).map_err(err)
}

/// [`read_pth`] on bytes already in memory (the fuzz target's entry point). `Err` is what
/// `read_pth` reports for the file ([`FormatError::at`] attaches the path).
pub fn read_pth_bytes(bytes: &[u8]) -> Result<StateDict, FormatError> {
    if !bytes.starts_with(b"PK") {
        return Err(FormatError::Invalid(
            "not a PyTorch checkpoint: not a zip archive (torch.save writes zip archives since torch 1.6)"
                .into(),
        ));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(FormatError::Zip)?;
    Ok(read_archive(&mut zip)?)
}

fn read_archive<R: Read + Seek>(zip: &mut zip::ZipArchive<R>) -> Result<StateDict, String> {
    let root = archive_root(zip)?;
    if let Ok(order) = read_entry(zip, &format!("{root}byteorder"), 64) {
        if order.trim_ascii() != b"little" {
            return Err(format!(
                "byteorder `{}` is not supported (only little-endian archives)",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let pkl = read_entry(zip, &format!("{root}data.pkl"), 1 << 31)?;
    let top = Unpickler::new(&pkl)
        .load()
        .map_err(|e| format!("{root}data.pkl: {e}"))?;
    let (_, items) = select_state_dict(&top)?;
    let mut storages: HashMap<String, Rc<Vec<u8>>> = HashMap::new();
    let mut sd = StateDict::new();
    for (k, v) in items.iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let bytes = match storages.get(&t.storage.key) {
            Some(b) => b.clone(),
            None => {
                let entry = format!("{root}data/{}", t.storage.key);
                let b = Rc::new(
                    read_entry(zip, &entry, u64::MAX)
                        .map_err(|e| format!("tensor `{name}`: {e}"))?,
                );
                storages.insert(t.storage.key.clone(), b.clone());
                b
            }
        };
        let tensor = materialise(t, &bytes).map_err(|e| format!("tensor `{name}`: {e}"))?;
        sd.insert(name.to_string(), tensor);
    }
    if !sd.is_empty() && sd.keys().all(|k| k.starts_with("module.")) {
        sd = sd
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    Ok(sd)
}

/// The folder holding `data.pkl` (torch names it after the file, or `archive`), with a
/// trailing slash; empty when `data.pkl` is at the top.
fn archive_root<R: Read + Seek>(zip: &zip::ZipArchive<R>) -> Result<String, String> {
    let names: Vec<&str> = zip.file_names().collect();
    let found = names
        .iter()
        .filter_map(|n| n.strip_suffix("data.pkl"))
        .find(|root| {
            root.is_empty() || (root.ends_with('/') && !root[..root.len() - 1].contains('/'))
        });
    match found {
        Some(root) => Ok(root.to_string()),
        None => {
            let shown: Vec<_> = names.iter().take(8).collect();
            Err(format!(
                "no data.pkl in the zip archive, so not a torch.save file (entries: {shown:?})"
            ))
        }
    }
}

fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("archive entry `{name}` is missing or unreadable ({e})"))?;
    if f.size() > limit {
        return Err(format!(
            "archive entry `{name}` is {} bytes, more than the {limit} allowed",
            f.size()
        ));
    }
    // Read at most one byte past the declared size: a deflate stream may inflate far beyond
    // what the header claims (a zip bomb), and the CRC check only runs at its end.
    let declared = f.size();
    let mut out = Vec::new();
    (&mut f)
        .take(declared.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("archive entry `{name}` is corrupt ({e})"))?;
    if out.len() as u64 != declared {
        return Err(format!(
            "archive entry `{name}` holds {} bytes, its header declares {declared}",
            out.len()
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pickle values

#[derive(Clone, Copy, Debug, PartialEq)]
enum ElemType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl ElemType {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

struct Storage {
    /// `Err(class)` for storage classes we cannot convert (complex, float8, quantized).
    dtype: Result<ElemType, String>,
    key: String,
    numel: usize,
}

struct TensorRef {
    storage: Rc<Storage>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// An instance of a class the reader does not model. Dict subclasses keep their items so a
/// state dict saved as, say, an `AttrDict` still loads.
struct Object {
    class: String,
    items: Vec<(Value, Value)>,
}

#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Integers beyond i64.
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    List(Rc<RefCell<Vec<Value>>>),
    Tuple(Rc<Vec<Value>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Set(Rc<RefCell<Vec<Value>>>),
    /// A class or function named by GLOBAL / STACK_GLOBAL: (module, name).
    Global(Rc<(String, String)>),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
    Object(Rc<RefCell<Object>>),
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Dict(_) => "dict".into(),
            Value::Set(_) => "set".into(),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Object(o) => format!("`{}` object", o.borrow().class),
        }
    }

    fn describe_key(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bytes(b) => format!("bytes[{}]", b.len()),
            other => other.kind(),
        }
    }

    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            Value::Bool(b) => Some(*b as usize),
            _ => None,
        }
    }
}

/// Moves children out before a container is freed, so dropping a deeply nested pickle cannot
/// overflow the stack through recursive drops.
impl Drop for Value {
    fn drop(&mut self) {
        fn take(v: &mut Value, out: &mut Vec<Value>) {
            match v {
                Value::List(rc) | Value::Set(rc) => {
                    if let Some(cell) = Rc::get_mut(rc) {
                        out.append(cell.get_mut());
                    }
                }
                Value::Tuple(rc) => {
                    if let Some(items) = Rc::get_mut(rc) {
                        out.append(items);
                    }
                }
                Value::Dict(rc) => {
                    if let Some(cell) = Rc::get_mut(rc) {
                        for (k, v) in cell.get_mut().drain(..) {
                            out.push(k);
                            out.push(v);
                        }
                    }
                }
                Value::Object(rc) => {
                    if let Some(cell) = Rc::get_mut(rc) {
                        for (k, v) in cell.get_mut().items.drain(..) {
                            out.push(k);
                            out.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut pending = Vec::new();
        take(self, &mut pending);
        while let Some(mut v) = pending.pop() {
            take(&mut v, &mut pending);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing and materialising the state dict

/// Items of a dict or dict-like object.
fn dict_items(v: &Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Dict(d) => Some(d.borrow().clone()),
        Value::Object(o) if !o.borrow().items.is_empty() => Some(o.borrow().items.clone()),
        _ => None,
    }
}

fn count_tensors(items: &[(Value, Value)]) -> usize {
    items
        .iter()
        .filter(|(k, v)| matches!(k, Value::Str(_)) && matches!(v, Value::Tensor(_)))
        .count()
}

fn select_state_dict(top: &Value) -> Result<(String, Vec<(Value, Value)>), String> {
    let Some(items) = dict_items(top) else {
        return Err(match top {
            Value::Object(o) => {
                format!("the checkpoint holds a pickled `{}` object, not a state dict; save `model.state_dict()` instead", o.borrow().class)
            }
            other => format!(
                "the checkpoint holds a {}, not a dict of tensors",
                other.kind()
            ),
        });
    };
    if count_tensors(&items) > 0 {
        return Ok(("top-level".into(), items));
    }
    let mut seen = vec![];
    for name in STATE_DICT_ENTRIES {
        let Some((_, v)) = items
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == name))
        else {
            continue;
        };
        match dict_items(v) {
            Some(inner) if count_tensors(&inner) > 0 => return Ok((name.to_string(), inner)),
            _ => seen.push(format!("`{name}` holds a {}", v.kind())),
        }
    }
    let keys: Vec<String> = items
        .iter()
        .take(20)
        .map(|(k, _)| k.describe_key())
        .collect();
    let more = if items.len() > 20 {
        format!(" and {} more", items.len() - 20)
    } else {
        String::new()
    };
    let seen = if seen.is_empty() {
        String::new()
    } else {
        format!(" ({})", seen.join(", "))
    };
    Err(format!(
        "no state dict found: the top-level dict has no tensors and no {} entry holding tensors{seen}; top-level keys: [{}]{more}",
        STATE_DICT_ENTRIES.map(|s| format!("`{s}`")).join(" / "),
        keys.join(", ")
    ))
}

/// Most elements a tensor may have beyond its storage size (stride-0 expansions): a bound on
/// what a corrupt record can make us allocate.
const MAX_EXPANDED_NUMEL: usize = 1 << 26;

fn materialise(t: &TensorRef, bytes: &[u8]) -> Result<HostTensor, String> {
    let dtype = t
        .storage
        .dtype
        .clone()
        .map_err(|class| format!("unsupported storage type {class}"))?;
    let esize = dtype.size();
    let available = bytes.len() / esize;
    if available < t.storage.numel {
        return Err(format!(
            "storage `{}` holds {} bytes, expected {} elements of {esize} bytes",
            t.storage.key,
            bytes.len(),
            t.storage.numel
        ));
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if numel > available.max(MAX_EXPANDED_NUMEL) {
        return Err(format!(
            "shape {:?} needs {numel} elements, storage has {available}",
            t.shape
        ));
    }
    if numel > 0 {
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| x.checked_add(acc))
            })
            .ok_or("offset overflows")?;
        if last >= available {
            return Err(format!(
                "view (offset {}, shape {:?}, stride {:?}) reaches element {last}, storage has {available}",
                t.offset, t.shape, t.stride
            ));
        }
    }
    let offsets = StridedOffsets::new(t, numel);
    let at = |i: usize| &bytes[i * esize..(i + 1) * esize];
    let data = match dtype {
        ElemType::F32 => HostData::F32(
            offsets
                .map(|i| f32::from_le_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        ElemType::F64 => HostData::F32(
            offsets
                .map(|i| f64::from_le_bytes(at(i).try_into().unwrap()) as f32)
                .collect(),
        ),
        ElemType::F16 => HostData::F32(
            offsets
                .map(|i| half::f16::from_le_bytes(at(i).try_into().unwrap()).to_f32())
                .collect(),
        ),
        ElemType::BF16 => HostData::F32(
            offsets
                .map(|i| half::bf16::from_le_bytes(at(i).try_into().unwrap()).to_f32())
                .collect(),
        ),
        ElemType::I64 => HostData::I64(
            offsets
                .map(|i| i64::from_le_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        ElemType::I32 => HostData::I64(
            offsets
                .map(|i| i32::from_le_bytes(at(i).try_into().unwrap()) as i64)
                .collect(),
        ),
        ElemType::I16 => HostData::I64(
            offsets
                .map(|i| i16::from_le_bytes(at(i).try_into().unwrap()) as i64)
                .collect(),
        ),
        ElemType::I8 => HostData::I64(offsets.map(|i| at(i)[0] as i8 as i64).collect()),
        ElemType::U8 | ElemType::Bool => HostData::I64(offsets.map(|i| at(i)[0] as i64).collect()),
    };
    Ok(HostTensor {
        shape: t.shape.clone(),
        data,
    })
}

/// Storage element offsets of a strided view in row-major order (bounds checked by the caller).
struct StridedOffsets<'a> {
    shape: &'a [usize],
    stride: &'a [usize],
    index: Vec<usize>,
    next: usize,
    remaining: usize,
}

impl<'a> StridedOffsets<'a> {
    fn new(t: &'a TensorRef, numel: usize) -> Self {
        Self {
            shape: &t.shape,
            stride: &t.stride,
            index: vec![0; t.shape.len()],
            next: t.offset,
            remaining: numel,
        }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.next;
        for d in (0..self.shape.len()).rev() {
            self.index[d] += 1;
            if self.index[d] < self.shape[d] {
                self.next += self.stride[d];
                break;
            }
            self.next -= (self.shape[d] - 1) * self.stride[d];
            self.index[d] = 0;
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

// ---------------------------------------------------------------------------------------------
// The pickle machine

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

type PResult<T> = Result<T, String>;

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: vec![],
            marks: vec![],
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated: needs {n} bytes at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> PResult<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn len_u64(&mut self) -> PResult<usize> {
        usize::try_from(self.u64()?).map_err(|_| "length too large".to_string())
    }

    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("truncated: unterminated line at byte {}", self.pos))?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| "non-UTF-8 text line".to_string())
    }

    fn string(&mut self, n: usize) -> PResult<Value> {
        Ok(Value::Str(String::from_utf8_lossy(self.take(n)?).into()))
    }

    fn bytes(&mut self, n: usize) -> PResult<Value> {
        Ok(Value::Bytes(self.take(n)?.into()))
    }

    /// The stack height below which the items belong to an open MARK (0 when none is open).
    fn mark_floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> PResult<Value> {
        if self.stack.len() <= self.mark_floor() && !self.marks.is_empty() {
            return Err("stack underflow: popped past a MARK".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&mut self) -> PResult<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".to_string())
    }

    /// The top `n` items, none of them from below the last MARK.
    fn pop_n(&mut self, n: usize) -> PResult<Vec<Value>> {
        if self.stack.len() < n + self.mark_floor() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let m = self.marks.pop().ok_or("MARK expected")?;
        if m > self.stack.len() {
            return Err("corrupt MARK".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, i: u64) -> PResult<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo entry {i} read before it was written"))
    }

    fn memo_put(&mut self, i: u64) -> PResult<()> {
        let v = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn load(mut self) -> PResult<Value> {
        loop {
            let at = self.pos;
            let op = self
                .byte()
                .map_err(|_| "truncated: ended before STOP".to_string())?;
            self.step(op)
                .map_err(|e| format!("{e} (opcode 0x{op:02x} at byte {at})"))?;
            if op == b'.' {
                return self
                    .stack
                    .pop()
                    .ok_or_else(|| "empty stack at STOP".to_string());
            }
        }
    }

    /// Runs one opcode; its operands follow it in `data`.
    fn step(&mut self, op: u8) -> PResult<()> {
        match op {
            0x80 => self.check_protocol(),
            0x95 => self.u64().map(drop), // FRAME: a length hint only
            b'.' => Ok(()),               // STOP: `load` returns the top of the stack
            b'(' | b'0' | b'1' | b'2' => self.stack_op(op),
            b'p' | b'q' | b'r' | 0x94 => self.memo_store(op),
            b'g' | b'h' | b'j' => self.memo_load(op),
            b'N' | 0x88 | 0x89 | b'I' | b'J' | b'K' | b'M' | b'L' | 0x8a | 0x8b | b'F' | b'G' => {
                self.push_number(op)
            }
            b'T' | b'U' | b'X' | 0x8c | 0x8d => self.push_str(op),
            b'B' | b'C' | 0x8e | 0x96 => self.push_bytes(op),
            b'}' | b']' | b')' | 0x8f | b'd' | b'l' | b't' | 0x91 | 0x85..=0x87 => {
                self.push_container(op)
            }
            b's' | b'u' | b'a' | b'e' | 0x90 => self.add_items(op),
            b'c' | 0x93 => self.push_global(op),
            b'R' | 0x81 | 0x92 | b'o' | b'i' => self.push_instance(op),
            b'b' => self.build(),
            b'Q' => self.push_persistent(),
            b'P' => Err("text persistent ids (PERSID) are not used by torch.save".into()),
            0x82..=0x84 => Err("extension registry opcodes (EXT*) are not supported".into()),
            0x97 | 0x98 => {
                Err("out-of-band buffers (protocol 5 NEXT_BUFFER) are not supported".into())
            }
            other => Err(format!("unknown opcode 0x{other:02x}")),
        }
    }

    /// PROTO: refuses protocols newer than 5.
    fn check_protocol(&mut self) -> PResult<()> {
        let proto = self.byte()?;
        if proto > 5 {
            return Err(format!("unsupported pickle protocol {proto}"));
        }
        Ok(())
    }

    /// MARK, POP, POP_MARK, DUP.
    fn stack_op(&mut self, op: u8) -> PResult<()> {
        match op {
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                // Right at a MARK, POP discards the mark itself.
                if self.stack.len() > self.mark_floor() || self.marks.is_empty() {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.stack.push(v);
            }
            _ => misrouted(op),
        }
        Ok(())
    }

    /// PUT, BINPUT, LONG_BINPUT, MEMOIZE: the top of the stack into the memo.
    fn memo_store(&mut self, op: u8) -> PResult<()> {
        let i = match op {
            b'p' => self.line()?.parse().map_err(|_| "bad PUT index")?,
            b'q' => self.byte()? as u64,
            b'r' => self.u32()? as u64,
            0x94 => self.memo.len() as u64,
            _ => misrouted(op),
        };
        self.memo_put(i)
    }

    /// GET, BINGET, LONG_BINGET: a memo entry onto the stack.
    fn memo_load(&mut self, op: u8) -> PResult<()> {
        let i = match op {
            b'g' => self.line()?.parse().map_err(|_| "bad GET index")?,
            b'h' => self.byte()? as u64,
            b'j' => self.u32()? as u64,
            _ => misrouted(op),
        };
        let v = self.memo_get(i)?;
        self.stack.push(v);
        Ok(())
    }

    /// Pushes None, a bool, an int or a float, binary or (protocol 0) text.
    fn push_number(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'I' => match self.line()? {
                // Protocol 0 writes bools as INT 00 / 01.
                "00" => Value::Bool(false),
                "01" => Value::Bool(true),
                s => s.parse().map(Value::Int).unwrap_or(Value::BigInt),
            },
            b'J' => Value::Int(self.u32()? as i32 as i64),
            b'K' => Value::Int(self.byte()? as i64),
            b'M' => Value::Int(self.u16()? as i64),
            b'L' => self
                .line()?
                .trim_end_matches('L')
                .parse()
                .map(Value::Int)
                .unwrap_or(Value::BigInt),
            0x8a => {
                let n = self.byte()? as usize;
                self.long(n)?
            }
            0x8b => {
                let n = self.u32()? as usize;
                self.long(n)?
            }
            b'F' => Value::Float(self.line()?.parse().map_err(|_| "bad FLOAT literal")?),
            b'G' => Value::Float(f64::from_be_bytes(self.take(8)?.try_into().unwrap())),
            _ => misrouted(op),
        };
        self.stack.push(v);
        Ok(())
    }

    /// Pushes a str; the opcode says how its length is written.
    fn push_str(&mut self, op: u8) -> PResult<()> {
        let n = match op {
            // BINSTRING's length is signed.
            b'T' => usize::try_from(self.u32()? as i32).map_err(|_| "negative string length")?,
            b'U' | 0x8c => self.byte()? as usize,
            b'X' => self.u32()? as usize,
            0x8d => self.len_u64()?,
            _ => misrouted(op),
        };
        let v = self.string(n)?;
        self.stack.push(v);
        Ok(())
    }

    /// Pushes a bytes (or bytearray); the opcode says how its length is written.
    fn push_bytes(&mut self, op: u8) -> PResult<()> {
        let n = match op {
            b'B' => self.u32()? as usize,
            b'C' => self.byte()? as usize,
            0x8e | 0x96 => self.len_u64()?,
            _ => misrouted(op),
        };
        let v = self.bytes(n)?;
        self.stack.push(v);
        Ok(())
    }

    /// Pushes a new dict, list, tuple or set: empty, or made of the items above the last MARK
    /// (TUPLE1-3: of the top one to three items).
    fn push_container(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            b'}' => Value::Dict(Rc::default()),
            b']' => Value::List(Rc::default()),
            b')' => Value::Tuple(Rc::default()),
            0x8f => Value::Set(Rc::default()),
            b'd' => Value::Dict(Rc::new(RefCell::new(pairs(self.pop_mark()?)?))),
            b'l' => Value::List(Rc::new(RefCell::new(self.pop_mark()?))),
            b't' => Value::Tuple(Rc::new(self.pop_mark()?)),
            0x91 => Value::Set(Rc::new(RefCell::new(self.pop_mark()?))),
            0x85..=0x87 => Value::Tuple(Rc::new(self.pop_n((op - 0x84) as usize)?)),
            _ => misrouted(op),
        };
        self.stack.push(v);
        Ok(())
    }

    /// SETITEM(S), APPEND(S), ADDITEMS: items into the container below them.
    fn add_items(&mut self, op: u8) -> PResult<()> {
        match op {
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                set_items(self.top()?, vec![(k, v)])
            }
            b'u' => {
                let items = pairs(self.pop_mark()?)?;
                set_items(self.top()?, items)
            }
            b'a' => {
                let v = self.pop()?;
                append(self.top()?, vec![v])
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                append(self.top()?, items)
            }
            _ => misrouted(op),
        }
    }

    /// GLOBAL (names on text lines) and STACK_GLOBAL (names on the stack).
    fn push_global(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            b'c' => self.global_from_lines()?,
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                Value::Global(Rc::new((m.to_string(), n.to_string())))
            }
            _ => misrouted(op),
        };
        self.stack.push(v);
        Ok(())
    }

    /// Module and name on two text lines (GLOBAL, INST).
    fn global_from_lines(&mut self) -> PResult<Value> {
        let module = self.line()?.to_string();
        let name = self.line()?.to_string();
        Ok(Value::Global(Rc::new((module, name))))
    }

    /// REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST: pushes what a callable or class makes. Only
    /// REDUCE's arguments are used (see [`call`]); classes are instantiated empty.
    fn push_instance(&mut self, op: u8) -> PResult<()> {
        let v = match op {
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let Value::Tuple(args) = &args else {
                    return Err(format!(
                        "REDUCE arguments are a {}, not a tuple",
                        args.kind()
                    ));
                };
                call(&func, args, 0)?
            }
            0x81 => {
                let _args = self.pop()?;
                instantiate(&self.pop()?)
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let _args = self.pop()?;
                instantiate(&self.pop()?)
            }
            b'o' => {
                let items = self.pop_mark()?;
                let Some(cls) = items.first() else {
                    return Err("OBJ without a class".into());
                };
                instantiate(cls)
            }
            b'i' => {
                let cls = self.global_from_lines()?;
                self.pop_mark()?;
                instantiate(&cls)
            }
            _ => misrouted(op),
        };
        self.stack.push(v);
        Ok(())
    }

    /// BUILD: pops the state and leaves the object as it is.
    fn build(&mut self) -> PResult<()> {
        // The state only matters for classes we do not model (or `_metadata` on an
        // OrderedDict); dropping it is what makes unknown classes harmless.
        let _state = self.pop()?;
        self.top()?;
        Ok(())
    }

    /// BINPERSID: a storage record (see [`persistent_load`]) for the id on the stack.
    fn push_persistent(&mut self) -> PResult<()> {
        let pid = self.pop()?;
        let v = persistent_load(&pid)?;
        self.stack.push(v);
        Ok(())
    }

    fn long(&mut self, n: usize) -> PResult<Value> {
        let b = self.take(n)?;
        if n == 0 {
            return Ok(Value::Int(0));
        }
        if n > 8 {
            // Fits in i64 only if the extra bytes are pure sign extension.
            let neg = b[n - 1] & 0x80 != 0;
            let fill = if neg { 0xff } else { 0 };
            if b[8..].iter().any(|&x| x != fill) || ((b[7] & 0x80 != 0) != neg) {
                return Ok(Value::BigInt);
            }
        }
        let m = n.min(8);
        let fill = if b[m - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut buf = [fill; 8];
        buf[..m].copy_from_slice(&b[..m]);
        Ok(Value::Int(i64::from_le_bytes(buf)))
    }
}

/// The `_` arm of an opcode family's match: `step` sent it an opcode of another family.
fn misrouted(op: u8) -> ! {
    unreachable!("opcode 0x{op:02x} dispatched to the wrong handler")
}

fn pairs(items: Vec<Value>) -> PResult<Vec<(Value, Value)>> {
    if items.len() & 1 != 0 {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn set_items(target: &mut Value, items: Vec<(Value, Value)>) -> PResult<()> {
    match target {
        Value::Dict(d) => d.try_borrow_mut().map_err(|_| "dict in use")?.extend(items),
        Value::Object(o) => o
            .try_borrow_mut()
            .map_err(|_| "object in use")?
            .items
            .extend(items),
        other => return Err(format!("SETITEM on a {}", other.kind())),
    }
    Ok(())
}

fn append(target: &mut Value, items: Vec<Value>) -> PResult<()> {
    match target {
        Value::List(l) | Value::Set(l) => {
            l.try_borrow_mut().map_err(|_| "list in use")?.extend(items)
        }
        // list subclasses we do not model: their items are not needed
        Value::Object(_) => {}
        other => return Err(format!("APPEND on a {}", other.kind())),
    }
    Ok(())
}

/// NEWOBJ / OBJ / INST: dict-like classes become dicts, everything else an opaque object.
fn instantiate(cls: &Value) -> Value {
    match cls {
        Value::Global(g) if is_dict_class(g) => Value::Dict(Rc::default()),
        Value::Global(g) => Value::Object(Rc::new(RefCell::new(Object {
            class: format!("{}.{}", g.0, g.1),
            items: vec![],
        }))),
        other => Value::Object(Rc::new(RefCell::new(Object {
            class: other.kind(),
            items: vec![],
        }))),
    }
}

fn is_dict_class(g: &(String, String)) -> bool {
    matches!(
        (g.0.as_str(), g.1.as_str()),
        ("collections", "OrderedDict" | "defaultdict") | ("builtins" | "__builtin__", "dict")
    )
}

/// Maximum nesting of `_rebuild_from_type_v2` wrappers (a guard against crafted recursion).
const MAX_CALL_DEPTH: usize = 4;

/// REDUCE: the few callables torch.save emits are evaluated; any other becomes an opaque object.
fn call(func: &Value, args: &[Value], depth: usize) -> PResult<Value> {
    let Value::Global(g) = func else {
        return Ok(instantiate(func));
    };
    let args = CallArgs { callee: g, args };
    Ok(match (g.0.as_str(), g.1.as_str()) {
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            rebuild_tensor(&args)?
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            rebuild_parameter(&args)?
        }
        ("torch._tensor", "_rebuild_from_type_v2") => {
            // (func, subclass, args, state): rebuild the plain tensor the subclass wraps.
            let (Value::Tuple(inner), true) = (args.get(2)?, depth < MAX_CALL_DEPTH) else {
                return Ok(instantiate(func));
            };
            call(args.get(0)?, inner, depth + 1)?
        }
        _ if is_dict_class(g) => dict_from_pairs(args.first()),
        ("builtins" | "__builtin__", "set" | "frozenset") => {
            let items = match args.first() {
                Some(Value::List(l)) => l.borrow().clone(),
                _ => vec![],
            };
            Value::Set(Rc::new(RefCell::new(items)))
        }
        ("_codecs", "encode") => match args.get(0)? {
            // Protocol 2 pickles `bytes` as _codecs.encode(text, "latin1").
            Value::Str(s) => Value::Bytes(
                s.chars()
                    .map(|c| c as u32 as u8)
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            other => other.clone(),
        },
        ("torch", "Size") => match args.first() {
            Some(Value::Tuple(t)) => Value::Tuple(t.clone()),
            _ => Value::Tuple(Rc::default()),
        },
        _ => instantiate(func),
    })
}

/// A REDUCE call's arguments, with the callee's name for error messages.
struct CallArgs<'a> {
    callee: &'a (String, String),
    args: &'a [Value],
}

impl<'a> CallArgs<'a> {
    /// Argument `i`; a missing one is an error.
    fn get(&self, i: usize) -> PResult<&'a Value> {
        self.args.get(i).ok_or_else(|| {
            format!(
                "{}.{} expects at least {} arguments, got {}",
                self.callee.0,
                self.callee.1,
                i + 1,
                self.args.len()
            )
        })
    }

    fn first(&self) -> Option<&'a Value> {
        self.args.first()
    }
}

/// `_rebuild_tensor*(storage, offset, size, stride, ...)`: a lazy view of the storage.
fn rebuild_tensor(args: &CallArgs) -> PResult<Value> {
    let storage = args.get(0)?;
    let Value::Storage(storage) = storage else {
        return Err(format!(
            "tensor record without a storage (found {})",
            storage.kind()
        ));
    };
    let offset = args
        .get(1)?
        .as_usize()
        .ok_or("tensor storage offset is not a non-negative int")?;
    let shape = tensor_dims(args.get(2)?, "size")?;
    let stride = tensor_dims(args.get(3)?, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {stride:?} differ in length"
        ));
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset,
        shape,
        stride,
    })))
}

/// A tensor's size or stride (`what`): a tuple of non-negative ints.
fn tensor_dims(v: &Value, what: &str) -> PResult<Vec<usize>> {
    match v {
        Value::Tuple(t) => t
            .iter()
            .map(|d| {
                d.as_usize()
                    .ok_or_else(|| format!("tensor {what} has a non-integer or negative entry"))
            })
            .collect(),
        other => Err(format!("tensor {what} is a {}, not a tuple", other.kind())),
    }
}

/// `_rebuild_parameter*(tensor, ...)`: an `nn.Parameter` loads as its tensor.
fn rebuild_parameter(args: &CallArgs) -> PResult<Value> {
    match args.get(0)? {
        t @ Value::Tensor(_) => Ok(t.clone()),
        other => Err(format!(
            "parameter record holds a {}, not a tensor",
            other.kind()
        )),
    }
}

/// A dict class called with an optional list of `(key, value)` tuples.
fn dict_from_pairs(first: Option<&Value>) -> Value {
    // OrderedDict([(k, v), ...]) in old protocols; the usual form has no arguments.
    let mut items = vec![];
    if let Some(Value::List(l)) = first {
        for pair in l.borrow().iter() {
            if let Value::Tuple(kv) = pair {
                if kv.len() == 2 {
                    items.push((kv[0].clone(), kv[1].clone()));
                }
            }
        }
    }
    Value::Dict(Rc::new(RefCell::new(items)))
}

/// BINPERSID: torch.save's `('storage', torch.<Type>Storage, key, location, numel)`.
fn persistent_load(pid: &Value) -> PResult<Value> {
    let Value::Tuple(t) = pid else {
        return Err(format!("persistent id is a {}, not a tuple", pid.kind()));
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(cls), key, _location, numel, ..] if &**tag == "storage" => {
            let key = match key {
                Value::Str(s) => s.to_string(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key is a {}", other.kind())),
            };
            let numel = numel
                .as_usize()
                .ok_or("storage size is not a non-negative int")?;
            let dtype =
                ElemType::from_storage_class(&cls.1).ok_or_else(|| format!("{}.{}", cls.0, cls.1));
            Ok(Value::Storage(Rc::new(Storage { dtype, key, numel })))
        }
        _ => Err("persistent id is not a ('storage', type, key, location, numel) record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> PResult<Value> {
        Unpickler::new(bytes).load()
    }

    #[test]
    fn long1_sign_extension() {
        assert!(matches!(
            run(b"\x80\x02\x8a\x01\xff.").unwrap(),
            Value::Int(-1)
        ));
        assert!(matches!(
            run(b"\x80\x02\x8a\x02\x00\x01.").unwrap(),
            Value::Int(256)
        ));
        assert!(matches!(
            run(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap(),
            Value::BigInt
        ));
        assert!(matches!(
            run(b"\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.").unwrap(),
            Value::Int(-1)
        ));
    }

    #[test]
    fn deep_nesting_drops_without_recursion() {
        let mut p = vec![0x80, 2];
        let depth = 200_000;
        p.extend(vec![b']'; depth]);
        p.extend(vec![b'a'; depth - 1]);
        p.push(b'.');
        assert!(matches!(run(&p).unwrap(), Value::List(_)));
    }

    #[test]
    fn strided_offsets_follow_the_view() {
        let storage = Rc::new(Storage {
            dtype: Ok(ElemType::F32),
            key: "0".into(),
            numel: 6,
        });
        // A [3, 2] transposed view of a contiguous [2, 3]: strides (1, 3).
        let t = TensorRef {
            storage,
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        assert_eq!(
            StridedOffsets::new(&t, 6).collect::<Vec<_>>(),
            vec![0, 3, 1, 4, 2, 5]
        );
    }

    #[test]
    fn an_entry_inflating_past_its_declared_size_is_refused() {
        // Made by fuzz/make_seeds.py: data.pkl declares 16 bytes and inflates to 1 MiB.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/pth/seed-declared-size-too-small"
        );
        let e = read_pth_bytes(&std::fs::read(path).unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "archive entry `archive/data.pkl` holds 17 bytes, its header declares 16"
        );
    }

    #[test]
    fn malformed_pickles_are_errors() {
        for bad in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x02}q\x00(u",
            b"\x80\x02s.",
            b"\x80\x02h\x05.",
            b"\x80\x02(\x85.",
            b"\x80\x06.",
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_opcode_byte_is_run_or_refused_without_panic() {
        // `step` lists each family's opcodes, and the family's own match must agree.
        for op in 0..=u8::MAX {
            let _ = run(&[0x80, 2, op]);
        }
    }
}
