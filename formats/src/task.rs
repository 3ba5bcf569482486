//! Downstream evaluation sets read from jsonl (no model, no tokenizer): HellaSwag as published,
//! a generic multiple-choice form, and LAMBADA. Each item is put in the form
//! lm-evaluation-harness scores: a context and its continuations, each continuation being the
//! one-space delimiter followed by the choice (see `docs/eval.md` for the rules). `eval --task`
//! and `train --eval-task` score these; `preprocess` can read the same files.

use std::path::{Path, PathBuf};

/// What is wrong with a task file; every variant names the file (and the line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not a task item.
    #[error("{path}:{line}: {what}\n---> HINT: one JSON object per line: HellaSwag's own jsonl (`ctx`, `endings`, `label`), {{\"context\": …, \"choices\": [ … ], \"answer\": k}}, or LAMBADA's {{\"text\": …}} (see docs/eval.md)")]
    Item {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The file holds no items.
    #[error("{path}: no items\n---> HINT: a task file holds one JSON object per line")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The format of a task file, told by its first item's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskFormat {
    /// HellaSwag's jsonl as published (`ctx_a`, `ctx_b`, `ctx`, `activity_label`, `endings`,
    /// `label`).
    Hellaswag,
    /// `{"context": …, "choices": [ … ], "answer": k}`.
    Choices,
    /// LAMBADA's jsonl (`{"text": …}`: the target is the last word).
    Lambada,
}

impl TaskFormat {
    /// Its name in output and docs.
    pub fn name(self) -> &'static str {
        match self {
            TaskFormat::Hellaswag => "hellaswag",
            TaskFormat::Choices => "choices",
            TaskFormat::Lambada => "lambada",
        }
    }

    /// Whether items are scored by choosing among continuations (else: one target, greedy).
    pub fn is_multiple_choice(self) -> bool {
        self != TaskFormat::Lambada
    }
}

/// One context with its continuations, in lm-evaluation-harness's form.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The context (`doc_to_text`).
    pub context: String,
    /// The continuations: the target delimiter (one space) and the choice.
    pub continuations: Vec<String>,
    /// Each choice's length in characters (Unicode scalar values, as Python's `len`), the
    /// delimiter not counted: `acc_norm`'s divisor.
    pub choice_chars: Vec<usize>,
}

/// One item of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskItem {
    /// The form lm-evaluation-harness scores.
    pub harness: Scored,
    /// HellaSwag only: build-nanogpt's form (`ctx` and `" " + ending` as they are, tokenized
    /// separately and concatenated).
    pub raw: Option<Scored>,
    /// Index of the right continuation (0 for LAMBADA: its only one).
    pub answer: usize,
}

/// A task file, read.
#[derive(Debug, Clone)]
pub struct Task {
    /// The file.
    pub path: PathBuf,
    /// Its name: the file stem (`hellaswag_val.jsonl` → `hellaswag_val`).
    pub name: String,
    /// Its format.
    pub format: TaskFormat,
    /// The items, in file order.
    pub items: Vec<TaskItem>,
}

impl Task {
    /// Reads `path` (the first `limit` items when given); the format is told by the first
    /// line's keys, and every line must be of it.
    pub fn read(path: &Path, limit: Option<usize>) -> Result<Task, TaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Task::parse(path, &text, limit)
    }

    /// Parses a task file's text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str, limit: Option<usize>) -> Result<Task, TaskError> {
        let mut format = None;
        let mut items = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if limit.is_some_and(|l| items.len() >= l) {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let fail = |what: String| TaskError::Item {
                path: path.to_path_buf(),
                line: index + 1,
                what,
            };
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| fail(format!("not JSON: {e}")))?;
            let object = value
                .as_object()
                .ok_or_else(|| fail("not a JSON object".into()))?;
            let this = if object.contains_key("endings") {
                TaskFormat::Hellaswag
            } else if object.contains_key("choices") {
                TaskFormat::Choices
            } else if object.contains_key("text") {
                TaskFormat::Lambada
            } else {
                return Err(fail(
                    "neither `endings` (HellaSwag), `choices` nor `text` (LAMBADA)".into(),
                ));
            };
            let format = *format.get_or_insert(this);
            if this != format {
                return Err(fail(format!(
                    "a {} item in a {} file (the first item's format)",
                    this.name(),
                    format.name()
                )));
            }
            let item = match format {
                TaskFormat::Hellaswag => hellaswag_item(object),
                TaskFormat::Choices => choices_item(object),
                TaskFormat::Lambada => lambada_item(object),
            }
            .map_err(fail)?;
            items.push(item);
        }
        let Some(format) = format else {
            return Err(TaskError::Empty {
                path: path.to_path_buf(),
            });
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().trim_end_matches(".jsonl").to_owned())
            .unwrap_or_default();
        Ok(Task {
            path: path.to_path_buf(),
            name,
            format,
            items,
        })
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

fn string<'a>(object: &'a Object, key: &str) -> Result<&'a str, String> {
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(format!("`{key}` is not a string: {other}")),
        None => Err(format!("no `{key}`")),
    }
}

fn strings(object: &Object, key: &str) -> Result<Vec<String>, String> {
    let list = object
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("`{key}` is not a list of strings"))?;
    let list: Vec<String> = list
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{key}` is not a list of strings"))?;
    if list.len() < 2 {
        return Err(format!("`{key}` has {} choices: at least 2", list.len()));
    }
    Ok(list)
}

/// An answer index: an integer or a string of one (HellaSwag's `label` is either).
fn answer(object: &Object, key: &str, choices: usize) -> Result<usize, String> {
    let value = object.get(key).ok_or_else(|| format!("no `{key}`"))?;
    let k = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("`{key}` is not a choice index: {value}"))?;
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    if k >= choices {
        return Err(format!("`{key}` is {k}, but there are {choices} choices"));
    }
    Ok(k)
}

/// The continuations of `choices` after lm-evaluation-harness's target delimiter (one space).
fn scored(context: String, choices: &[String]) -> Scored {
    Scored {
        context,
        continuations: choices.iter().map(|c| format!(" {c}")).collect(),
        choice_chars: choices.iter().map(|c| c.chars().count()).collect(),
    }
}

fn hellaswag_item(object: &Object) -> Result<TaskItem, String> {
    let endings = strings(object, "endings")?;
    let answer = answer(object, "label", endings.len())?;
    let (label, ctx_a, ctx_b) = (
        string(object, "activity_label")?,
        string(object, "ctx_a")?,
        string(object, "ctx_b")?,
    );
    let query = hellaswag_preprocess(&format!("{label}: {ctx_a} {}", capitalize(ctx_b)));
    let choices: Vec<String> = endings.iter().map(|e| hellaswag_preprocess(e)).collect();
    let ctx = string(object, "ctx")?;
    Ok(TaskItem {
        harness: scored(query, &choices),
        raw: Some(scored(ctx.to_owned(), &endings)),
        answer,
    })
}

fn choices_item(object: &Object) -> Result<TaskItem, String> {
    let choices = strings(object, "choices")?;
    let answer = answer(object, "answer", choices.len())?;
    Ok(TaskItem {
        harness: scored(string(object, "context")?.to_owned(), &choices),
        raw: None,
        answer,
    })
}

/// LAMBADA as lm-evaluation-harness's `lambada_openai`: the context is the text split on
/// single spaces without its last piece, joined again; the target is a space and that piece.
fn lambada_item(object: &Object) -> Result<TaskItem, String> {
    let text = string(object, "text")?;
    let Some((context, word)) = text.rsplit_once(' ') else {
        return Err("`text` has no space: no context before its last word".into());
    };
    if word.is_empty() {
        return Err("`text` ends with a space: its last word is empty".into());
    }
    Ok(TaskItem {
        harness: scored(context.to_owned(), &[word.to_owned()]),
        raw: None,
        answer: 0,
    })
}

/// Python's `str.capitalize()`: the first character upper-cased, the rest lower-cased.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
        None => String::new(),
    }
}

/// lm-evaluation-harness's HellaSwag clean-up: strip, `" [title]"` → `". "`, every bracketed
/// span `[…]` (shortest, within one line) removed, then one pass of `"  "` → `" "`.
pub fn hellaswag_preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        // Python's `\[.*?\]`: `.` stops at a newline.
        let line_end = after.find('\n').unwrap_or(after.len());
        match after[..line_end].find(']') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Task, TaskError> {
        Task::parse(Path::new("t.jsonl"), text, None)
    }

    /// The HellaSwag item put in the harness's form and kept as build-nanogpt reads it.
    #[test]
    fn hellaswag_items_take_the_harness_form() {
        let line = r#"{"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.", "ctx_b": "then", "ctx": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. then", "endings": [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled.", ", the man puts on a christmas coat, knitted with netting.", ", the man continues removing the snow on his car."], "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "train", "split_type": "indomain", "label": "3"}"#;
        let task = parse(line).unwrap();
        assert_eq!(task.format, TaskFormat::Hellaswag);
        let item = &task.items[0];
        assert_eq!(item.answer, 3);
        assert_eq!(
            item.harness.context,
            "Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then"
        );
        assert_eq!(
            item.harness.continuations[3],
            " , the man continues removing the snow on his car."
        );
        assert_eq!(item.harness.choice_chars[3], 49);
        let raw = item.raw.as_ref().unwrap();
        assert!(raw.context.ends_with("smiles. then"));
        assert_eq!(
            raw.continuations[0],
            " , the man adds wax to the windshield and cuts it."
        );
    }

    /// Reference (Python 3, the harness's `preprocess`):
    /// `preprocess(" How to x [title] Do it. [step] Go [header]  now ")` ==
    /// 'How to x. Do it. Go  now' (one `"  "` pass leaves the space before a removed span and
    /// the two after it as two), `preprocess("a [b\n] c")` == 'a [b\n] c',
    /// `preprocess("a [b [c] d")` == 'a d'.
    #[test]
    fn hellaswag_clean_up_matches_the_harness() {
        assert_eq!(
            hellaswag_preprocess(" How to x [title] Do it. [step] Go [header]  now "),
            "How to x. Do it. Go  now"
        );
        // An unclosed bracket stays; a bracket does not span lines.
        assert_eq!(hellaswag_preprocess("a [b\n] c"), "a [b\n] c");
        assert_eq!(hellaswag_preprocess("a [b [c] d"), "a d");
        assert_eq!(capitalize("tHE man"), "The man");
        assert_eq!(capitalize(""), "");
    }

    #[test]
    fn generic_and_lambada_items() {
        let task = parse(
            "{\"context\": \"2 + 2 =\", \"choices\": [\"3\", \"4\"], \"answer\": 1}\n\n{\"context\": \"x\", \"choices\": [\"a\", \"bé\"], \"answer\": \"0\"}\n",
        )
        .unwrap();
        assert_eq!(task.name, "t");
        assert_eq!(task.items.len(), 2);
        assert_eq!(task.items[0].harness.continuations, [" 3", " 4"]);
        assert_eq!(task.items[1].harness.choice_chars, [1, 2]);
        let task = parse("{\"text\": \"the cat sat on the mat\"}").unwrap();
        assert_eq!(task.format, TaskFormat::Lambada);
        assert_eq!(task.items[0].harness.context, "the cat sat on the");
        assert_eq!(task.items[0].harness.continuations, [" mat"]);
        let limited = Task::parse(
            Path::new("t.jsonl"),
            "{\"text\": \"a b\"}\n{\"text\": \"c d\"}\n",
            Some(1),
        )
        .unwrap();
        assert_eq!(limited.items.len(), 1);
    }

    #[test]
    fn bad_items_name_the_line() {
        let cases = [
            ("{\"text\": \"a b\"}\n{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 0}", "t.jsonl:2: a choices item in a lambada file"),
            ("{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 2}", "t.jsonl:1: `answer` is 2, but there are 2 choices"),
            ("{\"context\": \"x\", \"choices\": [\"a\"], \"answer\": 0}", "t.jsonl:1: `choices` has 1 choices"),
            ("[1]", "t.jsonl:1: not a JSON object"),
            ("{\"text\": \"word\"}", "t.jsonl:1: `text` has no space"),
            ("{\"foo\": 1}", "t.jsonl:1: neither"),
            ("\n", "t.jsonl: no items"),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(expected), "{text:?}: {e}");
        }
    }
}
