//! Reading one string column of a Parquet file.

use crate::input::InputError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::Path;

/// Every row's value of column `key`, as `(row index, text)`; a non-string value is a
/// record-level error for its row.
#[allow(clippy::type_complexity)]
pub fn read_column(
    path: &Path,
    key: &str,
) -> Result<Vec<Result<(u64, String), InputError>>, InputError> {
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
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| fail(format!("cannot read rows: {e}")))?;
    let mut out = Vec::new();
    for (index, row) in rows.enumerate() {
        let row = row.map_err(|e| fail(format!("row {}: {e}", index + 1)))?;
        let value = row.get_column_iter().next().map(|(_, f)| f.clone());
        out.push(match value {
            Some(Field::Str(s)) => Ok((index as u64, s)),
            other => Err(InputError {
                path: path.into(),
                line: Some(index as u64 + 1),
                what: format!("column `{key}` is not a string (found {other:?})"),
                record_level: true,
            }),
        });
    }
    Ok(out)
}
