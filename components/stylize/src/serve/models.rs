//! The served models: the packages, loaded and verified once at start-up by the batch stage's
//! own loader, and the device they run on.

use std::path::Path;

use kubestyle_manifest::StageError;

use crate::inputs::{Loaded, load_packages};
use crate::style::{Style, parse_style};
use crate::{Args, Compute, select_device, select_kernels};

use super::error::ServeError;

/// The packages (each a model named after its directory) and the batch options of a forward
/// pass.
pub(crate) struct Models {
    pub(crate) packages: Vec<Loaded>,
    pub(crate) compute: Compute,
    pub(crate) batch: Args,
}

impl Models {
    /// Load and verify every package of `batch.packages` (weights' SHA-256 against the model
    /// card, as the batch stage), on the device `batch` asks for.
    pub(crate) fn load(batch: Args) -> Result<Models, StageError> {
        let compute = select_kernels(select_device(&batch.backend, &batch.device)?, batch.kernels)?;
        if let Some(why) = &compute.fallback {
            tracing::warn!(
                "--device {}: no usable GPU, running on the CPU: {why}",
                compute.requested
            );
        }
        if !batch.tile.is_multiple_of(4) || batch.tile < 64 || batch.overlap * 2 >= batch.tile {
            return Err(StageError::Usage(
                "--tile must be a multiple of 4, at least 64, and more than twice --overlap".into(),
            ));
        }
        if batch.tiling == crate::Tiling::Exact && !compute.fused {
            return Err(StageError::Usage(
                "--tiling exact runs on the fused CPU kernels only".into(),
            ));
        }
        if batch.lanes == Some(0) {
            return Err(StageError::Usage("--lanes must be at least 1".into()));
        }
        let scratch = batch.volume.clone();
        // With `--package` given, the loader reads no manifest: volume and run id are unused.
        let packages = load_packages(&batch, Path::new(&scratch), "serve", &compute)?;
        let mut names: Vec<&str> = packages.iter().map(|p| p.dir_name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StageError::Usage(format!(
                "two packages are both named {:?} (a model's name is its directory's)",
                w[0]
            )));
        }
        for p in &packages {
            tracing::info!(
                "model {}: {} ({} styles, weights sha256 {})",
                p.dir_name,
                p.card.architecture.name(),
                p.card.styles.len(),
                p.card.weights.sha256
            );
        }
        Ok(Models {
            packages,
            compute,
            batch,
        })
    }

    pub(crate) fn get(&self, name: &str) -> Result<&Loaded, ServeError> {
        self.packages
            .iter()
            .find(|p| p.dir_name == name)
            .ok_or_else(|| ServeError::NoModel(name.to_string()))
    }

    /// The model a request without a model name means: the only one served.
    pub(crate) fn only(&self) -> Result<&Loaded, ServeError> {
        match self.packages.as_slice() {
            [one] => Ok(one),
            many => Err(ServeError::BadRequest(format!(
                "several models are served ({}): name one (`model=`)",
                many.iter()
                    .map(|p| p.dir_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.packages.iter().map(|p| p.dir_name.as_str()).collect()
    }
}

/// A request's style (the batch stage's grammar: an index, a name or a blend) resolved against
/// a package's styles; style 0 when none is given, as the batch stage.
pub(crate) fn resolve_style(pkg: &Loaded, spec: Option<&str>) -> Result<Style, ServeError> {
    parse_style(spec.unwrap_or("0"), &pkg.card.styles).map_err(|e| match e {
        StageError::InputInvalid(m) | StageError::Usage(m) => ServeError::BadRequest(m),
        other => ServeError::Internal(other.to_string()),
    })
}
