//! The results of a run for people and for tools: `results.csv`, `results.json` and
//! `results.parquet` (`parquet.rs`; one row per input × style) and a contact sheet (inputs down,
//! styles across, labelled).
//!
//! Both are built from the stylize manifests alone (every styled output carries its input,
//! package, style, size, backend, device and forward-pass time), so they merge the manifests
//! of several stylize shards the same way.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, Rgb, RgbImage};
use kubestyle_manifest::{Artifact, ArtifactKind, Manifest, StageError};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Where the input came from (its `s3://` URI, or its path on the volume).
    pub input_source: String,
    /// The input's path on the volume (or as given to stylize).
    pub input: String,
    pub package: String,
    pub style: String,
    /// The output's key below the run's prefix.
    pub output_key: String,
    /// The output's path on the volume.
    #[serde(skip)]
    pub output_path: String,
    /// Where the output is published.
    pub output_uri: String,
    pub sha256: String,
    pub width: u64,
    pub height: u64,
    pub backend: String,
    pub device: String,
    /// Forward-pass time in milliseconds.
    pub milliseconds: f64,
    /// When the stylize stage that made it finished (its manifest's `finished_at`, UTC; kept
    /// to the microsecond, as every table stores it).
    #[serde(serialize_with = "rfc3339")]
    pub stylized_at: chrono::DateTime<chrono::Utc>,
    /// The input's SHA-256 as stylize recorded it: the contact sheet shows the input only when
    /// the file at `input` still has it.
    #[serde(skip)]
    pub input_sha256: String,
    /// The output's and the input's thumbnails stylize made, if any (path under the volume,
    /// SHA-256).
    #[serde(skip)]
    pub thumbnail: Option<(String, String)>,
    #[serde(skip)]
    pub input_thumbnail: Option<(String, String)>,
}

/// A thumbnail attribute (`{"path", "sha256"}`) of an output.
fn attr_thumb(a: &Artifact, k: &str) -> Option<(String, String)> {
    let t = a.attributes.get(k)?;
    let field = |f: &str| t.get(f).and_then(Value::as_str).map(str::to_string);
    Some((field("path")?, field("sha256")?))
}

/// The CSV columns, in order.
pub const COLUMNS: [&str; 13] = [
    "input_source",
    "input",
    "package",
    "style",
    "output_key",
    "output_uri",
    "sha256",
    "width",
    "height",
    "backend",
    "device",
    "milliseconds",
    "stylized_at",
];

/// A timestamp as the tables write it: RFC 3339, UTC, microseconds.
pub fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn rfc3339<S: serde::Serializer>(
    t: &chrono::DateTime<chrono::Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(t))
}

fn attr_str(a: &Artifact, k: &str) -> String {
    match a.attributes.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn attr_num(a: &Artifact, k: &str) -> Option<f64> {
    a.attributes.get(k).and_then(Value::as_f64)
}

/// Rows for every styled output of `manifests`, by input, then in the manifests' order.
/// `uri_of` maps an output's key to where it is published.
pub fn rows(manifests: &[Manifest], uri_of: impl Fn(&str) -> String) -> Vec<Row> {
    let mut rows: Vec<Row> = manifests
        .iter()
        .flat_map(|m| m.outputs.iter().map(move |a| (m, a)))
        .filter(|(_, a)| a.kind == ArtifactKind::Styled)
        .map(|(m, a)| {
            let key = kubestyle_manifest::manifest::published_key(&m.run_id, &a.path);
            let input = attr_str(a, "input");
            let source = attr_str(a, "input_source");
            Row {
                input_source: if source.is_empty() {
                    input.clone()
                } else {
                    source
                },
                input,
                package: attr_str(a, "package"),
                style: attr_str(a, "style"),
                output_key: key.to_string(),
                output_uri: uri_of(key),
                output_path: a.path.clone(),
                sha256: a.sha256.to_string(),
                width: attr_num(a, "width").unwrap_or(0.0) as u64,
                height: attr_num(a, "height").unwrap_or(0.0) as u64,
                backend: attr_str(a, "backend"),
                device: attr_str(a, "device"),
                milliseconds: attr_num(a, "forward_ms").unwrap_or(0.0),
                stylized_at: m.finished_at,
                input_sha256: attr_str(a, "input_sha256"),
                thumbnail: attr_thumb(a, sheet::THUMBNAIL),
                input_thumbnail: attr_thumb(a, sheet::INPUT_THUMBNAIL),
            }
        })
        .collect();
    // Stable: within one input, the manifest's order (the order styles were asked for).
    rows.sort_by(|a, b| a.input.cmp(&b.input));
    rows
}

/// `results.csv`.
pub fn to_csv(rows: &[Row]) -> Result<Vec<u8>, StageError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let internal = |e: csv::Error| StageError::Internal(format!("writing results.csv: {e}"));
    w.write_record(COLUMNS).map_err(internal)?;
    for r in rows {
        w.write_record([
            r.input_source.as_str(),
            &r.input,
            &r.package,
            &r.style,
            &r.output_key,
            &r.output_uri,
            &r.sha256,
            &r.width.to_string(),
            &r.height.to_string(),
            &r.backend,
            &r.device,
            &format!("{:.1}", r.milliseconds),
            &timestamp(&r.stylized_at),
        ])
        .map_err(internal)?;
    }
    w.into_inner()
        .map_err(|e| StageError::Internal(format!("writing results.csv: {e}")))
}

/// `results.json`.
pub fn to_json(run_id: &str, destination: &str, rows: &[Row]) -> Vec<u8> {
    let v = serde_json::json!({
        "schema": "kubestyle.results/v1",
        "run_id": run_id,
        "destination": destination,
        "columns": COLUMNS,
        "rows": rows,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s.into_bytes()
}

/// Contact sheet layout (the cell size and the bounds are shared with stylize, which makes the
/// thumbnails).
use kubestyle_manifest::command::sheet::{self, THUMB};
const PAD: u32 = 8;
/// Captions under the cells: the 8×8 font at ×1.
const CAPTION: u32 = 8 + 8;
/// The header row: one line at ×2, or two lines at ×1.
const HEADER: u32 = 24;
/// Rows beyond this many inputs are left off (and said so in the header).
pub const MAX_ROWS: usize = sheet::SHEET_ROWS;
/// Columns beyond this many styles are left off (and said so in the header): the sheet is at
/// most `PAD + 65 × (THUMB + PAD)` = 13,008 px wide, within what JPEG can store.
pub const MAX_COLUMNS: usize = sheet::SHEET_COLUMNS;

const BACKGROUND: Rgb<u8> = Rgb([24, 24, 28]);
const CELL: Rgb<u8> = Rgb([44, 44, 50]);
const TEXT: Rgb<u8> = Rgb([235, 235, 235]);
const DIM: Rgb<u8> = Rgb([150, 150, 160]);

/// Draw `text` with the 8×8 bitmap font at `scale`, centred in `width` pixels from `x`; a
/// leading `~` marks text cut to fit (the end is kept: names differ at the end more often).
fn draw_text(
    img: &mut RgbImage,
    x: u32,
    y: u32,
    width: u32,
    text: &str,
    scale: u32,
    color: Rgb<u8>,
) {
    let glyph_w = 8 * scale;
    let max_chars = (width / glyph_w).max(1) as usize;
    let chars: Vec<char> = text.chars().collect();
    let shown: Vec<char> = if chars.len() > max_chars {
        let mut v = vec!['~'];
        v.extend(&chars[chars.len() - (max_chars - 1)..]);
        v
    } else {
        chars
    };
    let x = x + (width - shown.len() as u32 * glyph_w) / 2;
    for (i, c) in shown.iter().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(*c as usize)
            .copied()
            .unwrap_or(font8x8::legacy::BASIC_LEGACY[b'?' as usize]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + i as u32 * glyph_w + col * scale + dx;
                        let py = y + row as u32 * scale + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, color);
                        }
                    }
                }
            }
        }
    }
}

/// A column label: one line at ×2 when it fits, else ×1, split in two at `+` when needed.
fn draw_label(img: &mut RgbImage, x: u32, y: u32, text: &str) {
    let n = text.chars().count() as u32;
    if n * 16 <= THUMB {
        draw_text(img, x, y + 4, THUMB, text, 2, TEXT);
    } else if n * 8 <= THUMB {
        draw_text(img, x, y + 8, THUMB, text, 1, TEXT);
    } else if let Some((a, b)) = text.split_once('+') {
        draw_text(img, x, y + 2, THUMB, a, 1, TEXT);
        draw_text(img, x, y + 12, THUMB, &format!("+{b}"), 1, TEXT);
    } else {
        draw_text(img, x, y + 8, THUMB, text, 1, TEXT);
    }
}

/// The largest input file the contact sheet reads.
const MAX_INPUT_BYTES: u64 = 512 << 20;

/// The input file a manifest's `input` attribute names, when it may be shown: a path inside
/// the volume (validated like every manifest path) or an absolute path, that is a regular file
/// outside `/proc`, `/sys` and `/dev`, at most [`MAX_INPUT_BYTES`], whose SHA-256 is the one
/// stylize recorded. Anything else (a hostile or stale manifest) shows as "missing": the
/// contact sheet never reads a device, a FIFO or a file stylize did not use.
fn input_file(volume: &Path, input: &str, sha256: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(input);
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        kubestyle_manifest::location::validate_relative_path(input).ok()?;
        volume.join(p)
    };
    let real = path.canonicalize().ok()?;
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|d| real.starts_with(d))
    {
        return None;
    }
    let meta = std::fs::metadata(&real).ok()?;
    if !meta.is_file() || meta.len() > MAX_INPUT_BYTES || sha256.is_empty() {
        return None;
    }
    let (digest, _) = kubestyle_manifest::digest::sha256_file(&real).ok()?;
    (digest.as_str() == sha256).then_some(real)
}

/// A thumbnail stylize made, when the file under the volume still has the recorded digest.
/// Checked as an input is ([`input_file`]), and only under the volume.
fn thumbnail_file(volume: &Path, t: Option<&(String, String)>) -> Option<std::path::PathBuf> {
    let (rel, sha256) = t?;
    kubestyle_manifest::location::validate_relative_path(rel).ok()?;
    input_file(volume, rel, sha256)
}

/// A thumbnail of the image at `path`, if it can be read. One already scaled to fit the cell
/// (stylize's thumbnails) is used as it is.
fn thumb(path: Option<&Path>) -> Option<RgbImage> {
    let img = image::open(path?).ok()?;
    let (w, h) = (img.width(), img.height());
    if w.max(h) == THUMB {
        return Some(img.to_rgb8());
    }
    Some(img.thumbnail(THUMB, THUMB).to_rgb8())
}

/// Paste a thumbnail centred in the cell at (x, y); a placeholder when there is none.
fn paste_thumb(sheet: &mut RgbImage, x: u32, y: u32, t: Option<&RgbImage>) {
    for yy in y..y + THUMB {
        for xx in x..x + THUMB {
            sheet.put_pixel(xx, yy, CELL);
        }
    }
    let Some(t) = t else {
        draw_text(sheet, x, y + THUMB / 2 - 8, THUMB, "missing", 2, DIM);
        return;
    };
    let ox = x + (THUMB - t.width()) / 2;
    let oy = y + (THUMB - t.height()) / 2;
    image::imageops::replace(sheet, t, ox as i64, oy as i64);
}

/// The contact sheet as JPEG bytes: a header row with the style labels, then one row per input
/// (the input first, then each style), each cell captioned. `volume` resolves the manifests'
/// relative paths.
pub fn contact_sheet(volume: &Path, rows: &[Row]) -> Result<Vec<u8>, StageError> {
    contact_sheet_named(volume, rows, &|input: &str| {
        Path::new(input)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| input.to_string())
    })
}

/// [`contact_sheet`] with each input's caption from `name_of` (its path on the volume → the
/// text under its cell: its file name, or its ID when anonymized).
pub fn contact_sheet_named(
    volume: &Path,
    rows: &[Row],
    name_of: &dyn Fn(&str) -> String,
) -> Result<Vec<u8>, StageError> {
    // Columns: (package, style) in order of first appearance; rows: inputs.
    let multi_package = {
        let mut p: Vec<&str> = rows.iter().map(|r| r.package.as_str()).collect();
        p.sort();
        p.dedup();
        p.len() > 1
    };
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut seen: std::collections::HashSet<(String, String)> = Default::default();
    let mut by_input: BTreeMap<&str, BTreeMap<(String, String), &Row>> = BTreeMap::new();
    for r in rows {
        let col = (r.package.clone(), r.style.clone());
        if seen.insert(col.clone()) {
            columns.push(col.clone());
        }
        by_input.entry(r.input.as_str()).or_default().insert(col, r);
    }
    // Bounded: at most MAX_COLUMNS styles across (JPEG stores at most 65,535 px a side).
    let n_columns = columns.len();
    columns.truncate(MAX_COLUMNS);
    let n_inputs = by_input.len();
    let shown: Vec<_> = by_input.into_iter().take(MAX_ROWS).collect();
    let cols = columns.len() as u32 + 1;
    let cell_w = THUMB + PAD;
    let row_h = THUMB + CAPTION + PAD;
    let width = PAD + cols * cell_w;
    let height = PAD + HEADER + PAD + shown.len().max(1) as u32 * row_h;
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);

    let mut first = if n_inputs > shown.len() {
        format!("input ({}/{n_inputs})", shown.len())
    } else {
        "input".to_string()
    };
    if n_columns > columns.len() {
        first.push_str(&format!(" +{}/{n_columns}", columns.len()));
    }
    draw_label(&mut sheet, PAD, PAD, &first);
    for (i, (pkg, style)) in columns.iter().enumerate() {
        let label = if multi_package {
            format!("{pkg}/{style}")
        } else {
            style.clone()
        };
        draw_label(&mut sheet, PAD + (i as u32 + 1) * cell_w, PAD, &label);
    }

    let resolve = |p: &str| -> std::path::PathBuf { volume.join(p) };
    // Cells first (decoding and scaling every image is most of the work: done in parallel),
    // then paste them in order.
    let mut cells_at: Vec<(u32, u32, Option<std::path::PathBuf>)> = Vec::new();
    for (r, (input, cells)) in shown.iter().enumerate() {
        let y = PAD + HEADER + PAD + r as u32 * row_h;
        let first = cells.values().next();
        let sha = first.map(|r| r.input_sha256.as_str());
        // The input's thumbnail from stylize when there is one, else the input itself.
        let input_cell = thumbnail_file(volume, first.and_then(|r| r.input_thumbnail.as_ref()))
            .or_else(|| input_file(volume, input, sha.unwrap_or("")));
        cells_at.push((PAD, y, input_cell));
        let name = name_of(input);
        draw_text(&mut sheet, PAD, y + THUMB + 4, THUMB, &name, 1, DIM);
        for (c, col) in columns.iter().enumerate() {
            let x = PAD + (c as u32 + 1) * cell_w;
            let cell = cells.get(col);
            cells_at.push((
                x,
                y,
                cell.map(|row| {
                    thumbnail_file(volume, row.thumbnail.as_ref())
                        .unwrap_or_else(|| resolve(&row.output_path))
                }),
            ));
            if let Some(row) = cell {
                let caption = format!(
                    "{}x{}, {:.0} ms, {}",
                    row.width, row.height, row.milliseconds, row.backend
                );
                draw_text(&mut sheet, x, y + THUMB + 4, THUMB, &caption, 1, DIM);
            }
        }
    }
    let thumbs: Vec<Option<RgbImage>> = cells_at
        .par_iter()
        .map(|(_, _, p)| thumb(p.as_deref()))
        .collect();
    for ((x, y, _), t) in cells_at.iter().zip(&thumbs) {
        paste_thumb(&mut sheet, *x, *y, t.as_ref());
    }
    let mut out = Cursor::new(Vec::new());
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88);
    enc.encode_image(&DynamicImage::ImageRgb8(sheet))
        .map_err(|e| StageError::Internal(format!("encoding the contact sheet: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubestyle_manifest::StageRun;
    use serde_json::json;

    fn styled(vol: &Path, input: &str, style: &str, color: [u8; 3]) -> Artifact {
        let rel = format!("styled/m/{style}/{input}");
        let p = vol.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        RgbImage::from_pixel(40, 30, Rgb(color)).save(&p).unwrap();
        let mut a = Artifact::from_file(vol, &rel, rel.clone(), ArtifactKind::Styled).unwrap();
        let input_sha = kubestyle_manifest::sha256_file(vol.join("inputs").join(input))
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        a.attributes = json!({
            "input": format!("inputs/{input}"), "input_source": format!("s3://b/{input}"),
            "input_sha256": input_sha,
            "package": "m", "style": style, "width": 40, "height": 30,
            "backend": "flex", "device": "cpu", "forward_ms": 12.34
        })
        .as_object()
        .unwrap()
        .clone();
        a
    }

    #[test]
    fn rows_csv_json_and_sheet() {
        let d = tempfile::tempdir().unwrap();
        let vol = d.path();
        std::fs::create_dir_all(vol.join("inputs")).unwrap();
        for name in ["b.png", "a.png"] {
            RgbImage::from_pixel(50, 20, Rgb([200, 10, 10]))
                .save(vol.join("inputs").join(name))
                .unwrap();
        }
        let outs = vec![
            styled(vol, "b.png", "style-07", [0, 255, 0]),
            styled(vol, "a.png", "style-07", [0, 0, 255]),
            styled(vol, "a.png", "style-19", [255, 255, 0]),
        ];
        let m = StageRun::start("stylize", "0", "r").finish(json!({}), &[], vec![], outs);
        let rows = rows(std::slice::from_ref(&m), |k| format!("s3://out/r/{k}"));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].input, "inputs/a.png");
        assert_eq!(rows[0].style, "style-07");
        assert_eq!(rows[0].input_source, "s3://b/a.png");
        assert_eq!(rows[2].input, "inputs/b.png");
        assert_eq!(rows[0].output_uri, "s3://out/r/styled/m/style-07/a.png");

        let csv = String::from_utf8(to_csv(&rows).unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert_eq!(lines.len(), 4);
        let stamp = timestamp(&m.finished_at);
        assert!(
            lines[1].ends_with(&format!(",40,30,flex,cpu,12.3,{stamp}")),
            "{}",
            lines[1]
        );
        assert!(stamp.ends_with('Z') && stamp.len() == "2026-12-07T13:00:10.091465Z".len());

        let j: Value = serde_json::from_slice(&to_json("r", "s3://out/r/", &rows)).unwrap();
        assert_eq!(j["rows"].as_array().unwrap().len(), 3);
        assert_eq!(j["rows"][1]["style"], "style-19");
        assert_eq!(j["rows"][1]["stylized_at"], stamp.as_str());

        let sheet = contact_sheet(vol, &rows).unwrap();
        let img = image::load_from_memory(&sheet).unwrap().to_rgb8();
        // 2 inputs down, input + 2 styles across.
        assert_eq!(img.width(), PAD + 3 * (THUMB + PAD));
        assert_eq!(
            img.height(),
            PAD + HEADER + PAD + 2 * (THUMB + CAPTION + PAD)
        );
        // The a.png × style-19 cell is yellow at its centre; b.png × style-19 is a placeholder.
        let centre = |col: u32, row: u32| {
            *img.get_pixel(
                PAD + col * (THUMB + PAD) + THUMB / 2,
                PAD + HEADER + PAD + row * (THUMB + CAPTION + PAD) + THUMB / 2 - 20,
            )
        };
        let y = centre(2, 0);
        assert!(y[0] > 200 && y[1] > 200 && y[2] < 60, "{y:?}");
        let red = centre(0, 1);
        assert!(red[0] > 150 && red[1] < 60, "{red:?}");
        let empty = centre(2, 1);
        assert!(empty[0] < 80 && empty[1] < 80, "{empty:?}");
        // Same rows → same bytes.
        assert_eq!(sheet, contact_sheet(vol, &rows).unwrap());
    }

    #[test]
    fn the_sheet_reads_only_the_input_stylize_used() {
        let d = tempfile::tempdir().unwrap();
        let vol = d.path();
        let good = vol.join("in.png");
        RgbImage::from_pixel(8, 8, Rgb([1, 2, 3]))
            .save(&good)
            .unwrap();
        let sha = kubestyle_manifest::sha256_file(&good)
            .unwrap()
            .0
            .to_string();
        assert_eq!(
            input_file(vol, "in.png", &sha),
            Some(good.canonicalize().unwrap())
        );
        let abs = good.to_str().unwrap();
        assert!(input_file(vol, abs, &sha).is_some());
        // Another digest, none, paths out of the volume, special files, a FIFO: never read.
        assert_eq!(input_file(vol, "in.png", &"0".repeat(64)), None);
        assert_eq!(input_file(vol, "in.png", ""), None);
        assert_eq!(input_file(vol, "../in.png", &sha), None);
        for special in ["/dev/zero", "/proc/self/environ", "/sys/kernel/mm"] {
            assert_eq!(input_file(vol, special, &sha), None, "{special}");
        }
        let fifo = vol.join("fifo.png");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Would block forever if opened.
        assert_eq!(input_file(vol, "fifo.png", &sha), None);
    }

    /// A row of input `in.png` whose output file is missing.
    fn sheet_row(style: String) -> Row {
        Row {
            input_source: String::new(),
            input: "in.png".into(),
            package: "m".into(),
            style,
            output_key: String::new(),
            output_uri: String::new(),
            output_path: "missing.png".into(),
            sha256: String::new(),
            width: 1,
            height: 1,
            backend: String::new(),
            device: String::new(),
            milliseconds: 0.0,
            stylized_at: chrono::DateTime::UNIX_EPOCH,
            input_sha256: String::new(),
            thumbnail: None,
            input_thumbnail: None,
        }
    }

    #[test]
    fn the_sheet_stays_within_jpeg_limits_for_any_number_of_styles() {
        let d = tempfile::tempdir().unwrap();
        let row = |style: usize| sheet_row(format!("s{style}"));
        // 400 styles: 80,208 px wide unbounded, over JPEG's 65,535.
        let rows: Vec<Row> = (0..400).map(row).collect();
        let sheet = contact_sheet(d.path(), &rows).unwrap();
        let (w, _) = image::load_from_memory(&sheet)
            .unwrap()
            .to_rgb8()
            .dimensions();
        assert_eq!(w, PAD + (MAX_COLUMNS as u32 + 1) * (THUMB + PAD));
    }

    /// Issue #14: the sheet pastes the thumbnails stylize made (no full-size decode), but only
    /// one that still has its recorded digest.
    #[test]
    fn the_sheet_uses_stylize_thumbnails_that_verify() {
        let d = tempfile::tempdir().unwrap();
        let red = image::RgbImage::from_pixel(120, 90, Rgb([250, 10, 10]));
        std::fs::create_dir_all(d.path().join("thumbs")).unwrap();
        red.save(d.path().join("thumbs/out.png")).unwrap();
        let (sha, _) = kubestyle_manifest::sha256_file(d.path().join("thumbs/out.png")).unwrap();
        // The full-size output is not there: only the thumbnail can fill the cell.
        let row = |thumb_sha: &str| Row {
            thumbnail: Some(("thumbs/out.png".into(), thumb_sha.into())),
            ..sheet_row("s".into())
        };
        let centre = |rows: &[Row]| {
            let sheet = image::load_from_memory(&contact_sheet(d.path(), rows).unwrap())
                .unwrap()
                .to_rgb8();
            let x = PAD + (THUMB + PAD) + THUMB / 2;
            let y = PAD + HEADER + PAD + THUMB / 2;
            *sheet.get_pixel(x, y)
        };
        let shown = centre(&[row(sha.as_str())]);
        assert!(shown[0] > 200 && shown[1] < 60, "{shown:?}");
        let stale = centre(&[row(&"0".repeat(64))]);
        assert!(
            !(stale[0] > 200 && stale[1] < 60),
            "a thumbnail with another digest is not shown: {stale:?}"
        );
    }
}
