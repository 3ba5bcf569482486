//! Reading one string column of a Parquet file, row by row (streaming).

use crate::input::InputError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field;
use std::path::{Path, PathBuf};

/// Each row's value of column `key`, as `(row index, text)`; a non-string value is a
/// record-level error for its row, an unreadable file a file-level one.
pub fn read_column(
    path: &Path,
    key: &str,
) -> Result<impl Iterator<Item = Result<(u64, String), InputError>> + Send, InputError> {
    let fail = |what: String| InputError {
        path: path.into(),
        line: None,
        what,
        record_level: false,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema();
    let field = schema
        .get_fields()
        .iter()
        .find(|f| f.name() == key)
        .cloned()
        .ok_or_else(|| {
            fail(format!(
                "no column `{key}` (use --text-key to pick another)"
            ))
        })?;
    let projection = parquet::schema::types::Type::group_type_builder(schema.name())
        .with_fields(vec![field])
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let rows = RowIter::from_file_into(Box::new(reader))
        .project(Some(projection))
        .map_err(|e| fail(format!("cannot read rows: {e}")))?;
    let path: PathBuf = path.into();
    let key = key.to_string();
    let mut failed = false;
    Ok(rows.enumerate().map_while(move |(index, row)| {
        if failed {
            return None;
        }
        let line = index as u64 + 1;
        let item = match row {
            Err(e) => {
                failed = true;
                Err(InputError {
                    path: path.clone(),
                    line: Some(line),
                    what: format!("cannot read row: {e}"),
                    record_level: false,
                })
            }
            Ok(row) => match row.get_column_iter().next().map(|(_, f)| f) {
                Some(Field::Str(s)) => Ok((index as u64, s.clone())),
                other => Err(InputError {
                    path: path.clone(),
                    line: Some(line),
                    what: format!("column `{key}` is not a string (found {other:?})"),
                    record_level: true,
                }),
            },
        };
        Some(item)
    }))
}
