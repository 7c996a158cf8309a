//! What stylize and upload agree on about the contact sheet: which inputs it shows, how large
//! its cells are, and where stylize leaves the thumbnails upload pastes into it (so upload
//! never decodes a full-size photo for a 192-pixel cell).
//!
//! Stylize records each thumbnail in the output's attributes ([`THUMBNAIL`],
//! [`INPUT_THUMBNAIL`]: `{"path", "sha256"}`); upload uses one only when the file still has
//! that digest, and otherwise decodes the image itself as before.

use std::collections::BTreeSet;

use super::naming::run_dir;

/// Inputs shown, at most (rows of the sheet).
pub const SHEET_ROWS: usize = 48;

/// Styles shown, at most (columns besides the input's).
pub const SHEET_COLUMNS: usize = 64;

/// The side of a cell's square, in pixels: images are scaled to fit it.
pub const THUMB: u32 = 192;

/// The output attribute naming the output's thumbnail.
pub const THUMBNAIL: &str = "thumbnail";

/// The output attribute naming its input's thumbnail.
pub const INPUT_THUMBNAIL: &str = "input_thumbnail";

/// The inputs a sheet shows, by the `input` attribute of the outputs: the first
/// [`SHEET_ROWS`] distinct values in sorted order.
pub fn shown_inputs<'a>(inputs: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let all: BTreeSet<&str> = inputs.into_iter().collect();
    all.into_iter().take(SHEET_ROWS).collect()
}

/// Whether an image of this size gets a thumbnail file (smaller ones are as cheap to read as
/// their thumbnail).
pub fn wants_thumbnail(width: usize, height: usize) -> bool {
    width.max(height) > THUMB as usize
}

/// Where stylize writes the thumbnail of the file at `rel` (a path under the volume; below the
/// run's directory the run prefix is not repeated): `runs/<run>/thumbs/<rel>.png`.
pub fn thumbnail_path(run_id: &str, rel: &str) -> String {
    let run = format!("{}/", run_dir(run_id));
    let rel = rel.strip_prefix(run.as_str()).unwrap_or(rel);
    format!("{run}thumbs/{rel}.png")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_inputs_are_the_first_distinct_ones_in_order() {
        let names: Vec<String> = (0..100).rev().map(|i| format!("in/{i:03}.jpg")).collect();
        let doubled: Vec<&str> = names.iter().chain(&names).map(String::as_str).collect();
        let shown = shown_inputs(doubled);
        assert_eq!(shown.len(), SHEET_ROWS);
        assert_eq!(shown.first(), Some(&"in/000.jpg"));
        assert_eq!(shown.last(), Some(&"in/047.jpg"));
    }

    #[test]
    fn thumbnails_live_below_the_run() {
        assert_eq!(
            thumbnail_path("r1", "runs/r1/styled/m/style-07/a.jpg"),
            "runs/r1/thumbs/styled/m/style-07/a.jpg.png"
        );
        assert_eq!(
            thumbnail_path("r1", "elsewhere/a.png"),
            "runs/r1/thumbs/elsewhere/a.png.png"
        );
        assert!(wants_thumbnail(193, 10) && !wants_thumbnail(192, 192));
    }
}
