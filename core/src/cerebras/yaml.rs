//! Reading a YAML document key by key, recording what became of each key (read, ignored,
//! refused), so that no key of a config goes unaccounted for.

use h5gpt_formats::exit::with_hint;
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// The largest config file read: 1 MiB (a Model Zoo config is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The most YAML nodes (scalars, sequences, mappings) a config may hold once its anchors and
/// aliases are expanded; a document beyond it (an "alias bomb": a few hundred bytes of nested
/// aliases that expand to billions of nodes) is refused before it is built.
pub const MAX_CONFIG_NODES: u64 = 100_000;

/// The deepest nesting of sequences and mappings a config may have.
pub const MAX_CONFIG_DEPTH: usize = 100;

/// Counts the nodes of `text` with its aliases expanded, from the parser's events (each
/// anchor's expanded size remembered, each alias adding it), without building anything, and
/// refuses a document beyond [`MAX_CONFIG_NODES`] or [`MAX_CONFIG_DEPTH`]. Syntax errors are
/// left to the loader, which reports them with their position.
fn check_bounds(text: &str) -> Result<(), String> {
    let mut parser = Parser::new_from_str(text);
    // Expanded size of each anchor, by the parser's anchor id (0: no anchor).
    let mut sizes: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    // The open sequences and mappings: their anchor and the node count where they began.
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut total: u64 = 0;
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(());
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(_, _, anchor, _) => {
                total += 1;
                if anchor > 0 {
                    sizes.insert(anchor, 1);
                }
            }
            Event::Alias(anchor) => total += sizes.get(&anchor).copied().unwrap_or(1),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, total));
                total += 1;
                if open.len() > MAX_CONFIG_DEPTH {
                    return Err(format!(
                        "line {}: nested more than {MAX_CONFIG_DEPTH} levels deep",
                        mark.line()
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = open.pop() {
                    if anchor > 0 {
                        sizes.insert(anchor, total - start);
                    }
                }
            }
            _ => {}
        }
        if total > MAX_CONFIG_NODES {
            return Err(with_hint(
                format!(
                    "line {}: more than {MAX_CONFIG_NODES} values once its anchors and aliases are \
                     expanded (the limit of a config file)",
                    mark.line(),
                ),
                "a Model Zoo config has a few \
                 hundred; nested aliases (`&a`, `*a`) multiply",
            ));
        }
    }
}

/// A config we cannot read or run, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{what}", file.display(), if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    /// The YAML file.
    pub file: PathBuf,
    /// Dotted path of the key (`model.hidden_size`, `optimizer.learning_rate[1]`); empty for
    /// the whole file.
    pub key: String,
    /// What is wrong.
    pub what: String,
}

/// What became of a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Read: what it sets here.
    Read(String),
    /// Known and ignored: why it does not matter here.
    Ignored(String),
    /// Not known to this reader (only with `--allow-unknown`; an error otherwise).
    Unknown,
}

/// One key of the file and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Dotted path.
    pub key: String,
    /// The value as written (shortened).
    pub value: String,
    /// What we did with it.
    pub disposition: Disposition,
}

/// A parsed YAML file and the record of its keys.
pub struct Document {
    file: PathBuf,
    root: Yaml,
    entries: RefCell<Vec<Entry>>,
}

/// The message for a config of `size` bytes, beyond [`MAX_CONFIG_BYTES`].
fn too_large(size: u64) -> String {
    format!(
        "{size} bytes: larger than a config file may be ({MAX_CONFIG_BYTES} bytes, 1 MiB)\n---> \
         HINT: is this the config file?"
    )
}

/// The value as a short text for the report.
pub fn show(value: &Yaml) -> String {
    let text = match value {
        Yaml::Real(s) | Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".into(),
        Yaml::Array(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Yaml::Hash(hash) => format!(
            "{{{}}}",
            hash.iter()
                .map(|(k, v)| format!("{}: {}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Yaml::Alias(_) | Yaml::BadValue => "?".into(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

impl Document {
    /// Parses `text` (anchors and aliases resolved) as read from `file`. A text of more than
    /// [`MAX_CONFIG_BYTES`], or more than [`MAX_CONFIG_NODES`] values once its aliases are
    /// expanded, is refused before anything is built.
    pub fn parse(file: &Path, text: &str) -> Result<Document, ConfigError> {
        let whole = |what: String| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            what,
        };
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(whole(too_large(text.len() as u64)));
        }
        check_bounds(text).map_err(whole)?;
        let docs = YamlLoader::load_from_str(text).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            what: format!("not valid YAML: {e}"),
        })?;
        let root = match docs.into_iter().next() {
            Some(root @ Yaml::Hash(_)) => root,
            _ => {
                return Err(ConfigError {
                    file: file.to_path_buf(),
                    key: String::new(),
                    what: "not a YAML mapping of keys to values".into(),
                })
            }
        };
        Ok(Document {
            file: file.to_path_buf(),
            root,
            entries: RefCell::new(Vec::new()),
        })
    }

    /// A document already parsed (or built, as `convert-mup` does), named `file`.
    pub fn from_yaml(file: &Path, root: Yaml) -> Result<Document, ConfigError> {
        let text = super::convert::to_yaml_text(&root);
        Document::parse(file, &text)
    }

    /// Reads and parses `file` (refused unread when larger than [`MAX_CONFIG_BYTES`]).
    pub fn read(file: &Path) -> Result<Document, ConfigError> {
        let whole = |what: String| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            what,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|f| {
                use std::io::Read;
                f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)
            })
            .map_err(|e| whole(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            let size = std::fs::metadata(file).map_or(bytes.len() as u64, |m| m.len());
            return Err(whole(too_large(size)));
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| whole(format!("cannot read: not UTF-8 text: {e}")))?;
        Document::parse(file, &text)
    }

    /// The file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The document as parsed.
    pub fn root(&self) -> &Yaml {
        &self.root
    }

    /// The top-level mapping.
    pub fn top(&self) -> Section<'_> {
        let Yaml::Hash(hash) = &self.root else {
            unreachable!("parse keeps only mappings")
        };
        Section {
            doc: self,
            path: String::new(),
            hash,
        }
    }

    /// An error about `key`.
    pub fn error(&self, key: &str, what: impl fmt::Display) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.to_string(),
            what: what.to_string(),
        }
    }

    /// What became of every key, in the order they were met.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.borrow().clone()
    }

    fn record(&self, key: String, value: &Yaml, disposition: Disposition) {
        let mut entries = self.entries.borrow_mut();
        entries.retain(|e| e.key != key);
        entries.push(Entry {
            key,
            value: show(value),
            disposition,
        });
    }

    /// Records every key that nothing read or ignored as unknown, and returns their paths.
    /// A key recorded as a whole covers everything under it.
    pub fn sweep(&self) -> Vec<String> {
        let mut unknown = Vec::new();
        self.sweep_node(&self.root, "", &mut unknown);
        for key in &unknown {
            let value = self.find(key).cloned().unwrap_or(Yaml::Null);
            self.record(key.clone(), &value, Disposition::Unknown);
        }
        unknown
    }

    fn sweep_node(&self, node: &Yaml, path: &str, unknown: &mut Vec<String>) {
        let visit = |child_path: String, child: &Yaml, unknown: &mut Vec<String>| {
            let entries = self.entries.borrow();
            let covered = entries.iter().any(|e| {
                child_path == e.key
                    || child_path
                        .strip_prefix(e.key.as_str())
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            });
            let below = entries.iter().any(|e| {
                e.key
                    .strip_prefix(child_path.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            });
            drop(entries);
            if covered {
            } else if below {
                self.sweep_node(child, &child_path, unknown);
            } else {
                unknown.push(child_path);
            }
        };
        match node {
            Yaml::Hash(hash) => {
                for (k, v) in hash {
                    visit(join(path, &show(k)), v, unknown);
                }
            }
            Yaml::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    visit(format!("{path}[{i}]"), v, unknown);
                }
            }
            _ => {}
        }
    }

    /// The value at a dotted path (as [`Entry::key`] spells it).
    fn find(&self, path: &str) -> Option<&Yaml> {
        let mut node = &self.root;
        for part in path.split('.') {
            let (name, indices) = part
                .split_once('[')
                .map_or((part, ""), |(n, rest)| (n, rest));
            if !name.is_empty() {
                node = node.as_hash()?.get(&Yaml::String(name.to_string()))?;
            }
            for index in indices.split('[').filter(|s| !s.is_empty()) {
                let i: usize = index.trim_end_matches(']').parse().ok()?;
                node = node.as_vec()?.get(i)?;
            }
        }
        Some(node)
    }
}

/// A mapping inside the document, at a dotted path.
#[derive(Clone)]
pub struct Section<'a> {
    doc: &'a Document,
    path: String,
    hash: &'a Hash,
}

/// Dotted path of `key` under `prefix`.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

impl<'a> Section<'a> {
    /// The document.
    pub fn doc(&self) -> &'a Document {
        self.doc
    }

    /// Dotted path of `key` in this section.
    pub fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`, not recorded.
    pub fn raw(&self, key: &str) -> Option<&'a Yaml> {
        self.hash.get(&Yaml::String(key.to_string()))
    }

    /// Whether the section has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// Records `key` as read, setting `what`.
    pub fn read(&self, key: &str, what: impl Into<String>) {
        if let Some(value) = self.raw(key) {
            self.doc
                .record(self.key(key), value, Disposition::Read(what.into()));
        }
    }

    /// Records `key` (if present) as known and ignored, for `why`.
    pub fn ignore(&self, key: &str, why: impl Into<String>) {
        if let Some(value) = self.raw(key) {
            self.doc
                .record(self.key(key), value, Disposition::Ignored(why.into()));
        }
    }

    /// An error about `key` of this section.
    pub fn error(&self, key: &str, what: impl fmt::Display) -> ConfigError {
        self.doc.error(&self.key(key), what)
    }

    /// `key` as a number, recorded as read into `what`.
    pub fn f64(&self, key: &str, what: &str) -> Result<Option<f64>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let number = match value {
            Yaml::Integer(i) => *i as f64,
            Yaml::Real(_) => value
                .as_f64()
                .ok_or_else(|| self.error(key, "not a number"))?,
            other => {
                return Err(self.error(key, format!("{} is not a number", show(other))));
            }
        };
        self.read(key, what);
        Ok(Some(number))
    }

    /// `key` as a count (a non-negative integer), recorded as read into `what`.
    pub fn usize(&self, key: &str, what: &str) -> Result<Option<usize>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let count = match value {
            Yaml::Integer(i) if *i >= 0 => *i as usize,
            Yaml::Real(_) => match value.as_f64() {
                Some(v) if v >= 0.0 && v.fract() == 0.0 && v < 1e18 => v as usize,
                _ => {
                    return Err(
                        self.error(key, format!("{} is not a whole number ≥ 0", show(value)))
                    )
                }
            },
            other => {
                return Err(self.error(key, format!("{} is not a whole number ≥ 0", show(other))))
            }
        };
        self.read(key, what);
        Ok(Some(count))
    }

    /// `key` as a boolean, recorded as read into `what`.
    pub fn bool(&self, key: &str, what: &str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let Yaml::Boolean(b) = value else {
            return Err(self.error(key, format!("{} is not true or false", show(value))));
        };
        self.read(key, what);
        Ok(Some(*b))
    }

    /// `key` as a string, recorded as read into `what`.
    pub fn str(&self, key: &str, what: &str) -> Result<Option<&'a str>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let Yaml::String(s) = value else {
            return Err(self.error(key, format!("{} is not a string", show(value))));
        };
        self.read(key, what);
        Ok(Some(s.as_str()))
    }

    /// The mapping under `key` (its own keys are recorded one by one).
    pub fn section(&self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.raw(key) {
            None | Some(Yaml::Null) => Ok(None),
            Some(Yaml::Hash(hash)) => Ok(Some(Section {
                doc: self.doc,
                path: self.key(key),
                hash,
            })),
            Some(other) => Err(self.error(key, format!("{} is not a mapping", show(other)))),
        }
    }

    /// A mapping found elsewhere (a list item), under the dotted path `path`.
    pub fn nested(&self, path: String, value: &'a Yaml) -> Result<Section<'a>, ConfigError> {
        match value {
            Yaml::Hash(hash) => Ok(Section {
                doc: self.doc,
                path,
                hash,
            }),
            other => Err(self
                .doc
                .error(&path, format!("{} is not a mapping", show(other)))),
        }
    }

    /// The keys, in file order.
    pub fn keys(&self) -> Vec<&'a str> {
        self.hash.keys().filter_map(Yaml::as_str).collect()
    }

    /// The section's dotted path.
    pub fn path(&self) -> &str {
        &self.path
    }
}
