//! CSV files (read with the `csv` crate): one sample per row, its label in
//! one column and its features in the others.

use super::{bad, Dataset};
use crate::error::Result;
use std::path::Path;

/// How a CSV file is laid out (defaults: a header row, the label first,
/// comma-separated), as the common `label,pixel0,pixel1,..` MNIST CSVs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// The first row names the columns and is skipped.
    pub header: bool,
    /// The column holding the integer class label.
    pub label_column: usize,
    /// The field separator.
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            label_column: 0,
            delimiter: b',',
        }
    }
}

impl Dataset {
    /// Samples from the rows of a CSV file: the label column as an `i64`
    /// class label, every other column as an f32 feature, in order; sample
    /// shape `[columns − 1]` ([`Dataset::with_sample_shape`] reshapes them).
    /// `Err` naming the file, row and column if the file cannot be read, a
    /// row has another number of fields than the first, a feature is not a
    /// number or a label not an integer.
    pub fn from_csv(path: &Path, options: &CsvOptions) -> Result<Self> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(options.header)
            .delimiter(options.delimiter)
            .flexible(true)
            .from_path(path)
            .map_err(|e| bad(path, format!("cannot read: {e}")))?;
        let (mut samples, mut labels) = (Vec::new(), Vec::new());
        let mut width: Option<usize> = None;
        for (r, record) in reader.records().enumerate() {
            let record =
                record.map_err(|e| bad(path, format!("cannot read row {}: {e}", r + 1)))?;
            let row = r + 1 + usize::from(options.header);
            let fields = record.len();
            if *width.get_or_insert(fields) != fields {
                return Err(bad(
                    path,
                    format!(
                        "row {row} has {fields} fields, the first row {}",
                        width.unwrap_or(0)
                    ),
                ));
            }
            if options.label_column >= fields {
                return Err(bad(
                    path,
                    format!(
                        "row {row} has {fields} fields: no label column {}",
                        options.label_column
                    ),
                ));
            }
            for (c, field) in record.iter().enumerate() {
                let field = field.trim();
                if c == options.label_column {
                    let label = field.parse::<i64>().map_err(|_| {
                        bad(
                            path,
                            format!(
                                "row {row}, column {c}: `{field}` is not an integer class label"
                            ),
                        )
                    })?;
                    labels.push(label);
                } else {
                    let v = field.parse::<f32>().map_err(|_| {
                        bad(
                            path,
                            format!("row {row}, column {c}: `{field}` is not a number"),
                        )
                    })?;
                    samples.push(v);
                }
            }
        }
        let Some(width) = width else {
            return Err(bad(path, "no data rows"));
        };
        let features = width - 1;
        Dataset::new(samples, labels, &[features])
    }
}
