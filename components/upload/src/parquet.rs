//! `results.parquet`: the results table with typed columns, for pandas, polars, DuckDB and Spark.
//!
//! The columns are `results.csv`'s, in its order, typed: text as UTF-8 strings, `sha256` as the
//! 32 bytes of the digest (`FIXED_LEN_BYTE_ARRAY(32)`; `hex()` in any engine gives the CSV's
//! text), `width`/`height` as unsigned 32-bit integers, `milliseconds` as a double, `stylized_at`
//! as a UTC timestamp in microseconds. One row group, Snappy-compressed, written with the
//! `parquet` crate's column writers (the table is small: no Arrow arrays needed).

use std::sync::Arc;

use kubestyle_manifest::StageError;
use parquet::basic::Compression;
use parquet::data_type::{
    ByteArray, ByteArrayType, DoubleType, FixedLenByteArray, FixedLenByteArrayType, Int32Type,
    Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::report::{COLUMNS, Row};

/// The schema; its columns are [`COLUMNS`], in order (a test checks).
pub const SCHEMA: &str = "message kubestyle_results {
  REQUIRED BYTE_ARRAY input_source (STRING);
  REQUIRED BYTE_ARRAY input (STRING);
  REQUIRED BYTE_ARRAY package (STRING);
  REQUIRED BYTE_ARRAY style (STRING);
  REQUIRED BYTE_ARRAY output_key (STRING);
  REQUIRED BYTE_ARRAY output_uri (STRING);
  REQUIRED FIXED_LEN_BYTE_ARRAY (32) sha256;
  REQUIRED INT32 width (INTEGER(32,false));
  REQUIRED INT32 height (INTEGER(32,false));
  REQUIRED BYTE_ARRAY backend (STRING);
  REQUIRED BYTE_ARRAY device (STRING);
  REQUIRED DOUBLE milliseconds;
  REQUIRED INT64 stylized_at (TIMESTAMP(MICROS,true));
}";

fn err(e: impl std::fmt::Display) -> StageError {
    StageError::Internal(format!("writing results.parquet: {e}"))
}

/// `results.parquet` of `rows`.
pub fn to_parquet(rows: &[Row]) -> Result<Vec<u8>, StageError> {
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(err)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("kubestyle upload {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut w = SerializedFileWriter::new(Vec::new(), schema, props).map_err(err)?;
    let mut group = w.next_row_group().map_err(err)?;
    let text = |f: fn(&Row) -> &str| -> Vec<ByteArray> {
        rows.iter().map(|r| ByteArray::from(f(r))).collect()
    };
    let mut column = 0;
    while let Some(mut col) = group.next_column().map_err(err)? {
        let written = match COLUMNS[column] {
            "input_source" => {
                col.typed::<ByteArrayType>()
                    .write_batch(&text(|r| &r.input_source), None, None)
            }
            "input" => col
                .typed::<ByteArrayType>()
                .write_batch(&text(|r| &r.input), None, None),
            "package" => {
                col.typed::<ByteArrayType>()
                    .write_batch(&text(|r| &r.package), None, None)
            }
            "style" => col
                .typed::<ByteArrayType>()
                .write_batch(&text(|r| &r.style), None, None),
            "output_key" => {
                col.typed::<ByteArrayType>()
                    .write_batch(&text(|r| &r.output_key), None, None)
            }
            "output_uri" => {
                col.typed::<ByteArrayType>()
                    .write_batch(&text(|r| &r.output_uri), None, None)
            }
            "sha256" => {
                let digests = rows
                    .iter()
                    .map(|r| {
                        hex::decode(&r.sha256)
                            .ok()
                            .filter(|d| d.len() == 32)
                            .map(FixedLenByteArray::from)
                            .ok_or_else(|| err(format!("{:?} is not a SHA-256", r.sha256)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                col.typed::<FixedLenByteArrayType>()
                    .write_batch(&digests, None, None)
            }
            "width" | "height" => {
                let v = rows
                    .iter()
                    .map(|r| {
                        let n = if COLUMNS[column] == "width" {
                            r.width
                        } else {
                            r.height
                        };
                        // Stored as unsigned 32 bits (the logical type), in INT32's bits.
                        u32::try_from(n)
                            .map(|n| n as i32)
                            .map_err(|_| err(format!("size {n} over 32 bits")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                col.typed::<Int32Type>().write_batch(&v, None, None)
            }
            "backend" => {
                col.typed::<ByteArrayType>()
                    .write_batch(&text(|r| &r.backend), None, None)
            }
            "device" => col
                .typed::<ByteArrayType>()
                .write_batch(&text(|r| &r.device), None, None),
            "milliseconds" => {
                let v: Vec<f64> = rows.iter().map(|r| r.milliseconds).collect();
                col.typed::<DoubleType>().write_batch(&v, None, None)
            }
            "stylized_at" => {
                let v: Vec<i64> = rows
                    .iter()
                    .map(|r| r.stylized_at.timestamp_micros())
                    .collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)
            }
            other => return Err(err(format!("no writer for column {other}"))),
        };
        written.map_err(err)?;
        col.close().map_err(err)?;
        column += 1;
    }
    group.close().map_err(err)?;
    w.into_inner().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_has_the_csv_columns_in_order() {
        let t = parse_message_type(SCHEMA).unwrap();
        let names: Vec<&str> = t.get_fields().iter().map(|f| f.name()).collect();
        assert_eq!(names, COLUMNS);
    }

    #[test]
    fn a_table_is_written_with_its_magic_and_rows() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let row = Row {
            input_source: "s3://b/a.jpg".into(),
            input: "local/a.jpg".into(),
            package: "m".into(),
            style: "style-07".into(),
            output_key: "styled/m/style-07/a.jpg".into(),
            output_path: String::new(),
            output_uri: "s3://out/r/styled/m/style-07/a.jpg".into(),
            sha256: "ab".repeat(32),
            width: 640,
            height: 427,
            backend: "flex".into(),
            device: "cpu".into(),
            milliseconds: 12.5,
            stylized_at: chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap(),
            input_sha256: String::new(),
            thumbnail: None,
            input_thumbnail: None,
        };
        let bytes = to_parquet(&[row.clone(), row]).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        let r = SerializedFileReader::new(f).unwrap();
        assert_eq!(r.metadata().file_metadata().num_rows(), 2);
        let bad = Row {
            sha256: "xyz".into(),
            ..empty_row()
        };
        assert!(
            to_parquet(&[bad])
                .unwrap_err()
                .to_string()
                .contains("not a SHA-256")
        );
    }

    fn empty_row() -> Row {
        Row {
            input_source: String::new(),
            input: String::new(),
            package: String::new(),
            style: String::new(),
            output_key: String::new(),
            output_path: String::new(),
            output_uri: String::new(),
            sha256: String::new(),
            width: 0,
            height: 0,
            backend: String::new(),
            device: String::new(),
            milliseconds: 0.0,
            stylized_at: chrono::DateTime::from_timestamp_micros(0).unwrap(),
            input_sha256: String::new(),
            thumbnail: None,
            input_thumbnail: None,
        }
    }
}
