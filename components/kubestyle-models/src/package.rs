//! The kubestyle model package: a directory with `model.bpk` (burnpack weights) and
//! `model.json` (the model card). Self-contained: stylize needs nothing else.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;
use kubestyle_manifest::atomic::{Clobber, write_atomic};
use kubestyle_manifest::{Sha256Hex, sha256_bytes};

use crate::error::ModelError;
use serde::{Deserialize, Serialize};

use crate::Network;
use crate::arch::Architecture;
use crate::nets::{MultiStyle26, TransformerNet};
use crate::weights::SourceFormat;

pub const PACKAGE_FORMAT: &str = "kubestyle.model/v1";
pub const CARD_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "model.bpk";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Always `kubestyle.model/v1`.
    pub format: String,
    pub architecture: Architecture,
    /// One name per style index.
    pub styles: Vec<String>,
    pub parameters: u64,
    pub source: SourceInfo,
    pub weights: WeightsInfo,
    /// Keys present in the source that carry no weights and were dropped.
    #[serde(default)]
    pub dropped_keys: Vec<String>,
    pub kubestyle_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// Where the weights came from (URI or path as given).
    pub uri: String,
    pub sha256: Sha256Hex,
    pub format: SourceFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsInfo {
    pub file: String,
    pub sha256: Sha256Hex,
    pub bytes: u64,
}

/// Serialise the network to burnpack bytes.
pub fn to_burnpack(net: &Network) -> Result<Vec<u8>, ModelError> {
    let mut store = BurnpackStore::from_bytes(None);
    let r = match net {
        Network::TransformerNet(m) => m.save_into(&mut store),
        Network::MultiStyle26(m) => m.save_into(&mut store),
    };
    r.map_err(|e| ModelError::serialise("weights", e.to_string()))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| ModelError::serialise("weights", e.to_string()))?;
    Ok(bytes.to_vec())
}

/// Write `dir/model.bpk` then `dir/model.json` (last), both atomically.
pub fn write_package(
    dir: &Path,
    net: &Network,
    mut card: ModelCard,
) -> Result<ModelCard, ModelError> {
    let bytes = to_burnpack(net)?;
    card.weights = WeightsInfo {
        file: WEIGHTS_FILE.into(),
        sha256: sha256_bytes(&bytes),
        bytes: bytes.len() as u64,
    };
    write_atomic(dir.join(WEIGHTS_FILE), &bytes, Clobber::Replace)?;
    let mut json =
        serde_json::to_string_pretty(&card).map_err(|e| ModelError::serialise("model card", e))?;
    json.push('\n');
    write_atomic(dir.join(CARD_FILE), json.as_bytes(), Clobber::Replace)?;
    Ok(card)
}

pub fn card_path(dir: &Path) -> PathBuf {
    dir.join(CARD_FILE)
}

pub fn read_card(dir: &Path) -> Result<ModelCard, ModelError> {
    let p = card_path(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| ModelError::read(&p, e))?;
    let card: ModelCard = serde_json::from_str(&text).map_err(|e| {
        ModelError::Invalid(format!("{}: not a kubestyle model card: {e}", p.display()))
    })?;
    if card.format != PACKAGE_FORMAT {
        return Err(ModelError::Invalid(format!(
            "{}: unsupported package format {:?} (this build reads {PACKAGE_FORMAT})",
            p.display(),
            card.format
        )));
    }
    if card.styles.len() != card.architecture.num_styles() {
        return Err(ModelError::Invalid(format!(
            "{}: {} style names for a {} network with {} styles",
            p.display(),
            card.styles.len(),
            card.architecture.name(),
            card.architecture.num_styles()
        )));
    }
    Ok(card)
}

/// Read a package, verify its weights' digest and load them onto `device`.
pub fn load_package(dir: &Path, device: &Device) -> Result<(ModelCard, Network), ModelError> {
    let card = read_card(dir)?;
    if card.weights.file.contains('/') || card.weights.file.contains("..") {
        return Err(ModelError::Invalid(format!(
            "model card names weights outside the package: {}",
            card.weights.file
        )));
    }
    let wp = dir.join(&card.weights.file);
    let bytes = std::fs::read(&wp).map_err(|e| ModelError::read(&wp, e))?;
    let digest = sha256_bytes(&bytes);
    if digest != card.weights.sha256 {
        return Err(ModelError::Integrity(format!(
            "{}: sha256 {digest}, the model card says {}",
            wp.display(),
            card.weights.sha256
        )));
    }
    let mut store = BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(bytes)));
    let (net, result) = match card.architecture {
        Architecture::TransformerNet => {
            let mut m = TransformerNet::zeros(device);
            let r = m.load_from(&mut store);
            (r.map(|r| (Network::TransformerNet(Box::new(m)), r)))
                .map(|(n, r)| (Some(n), Some(r)))
                .unwrap_or_else(|e| {
                    tracing::error!("{e}");
                    (None, None)
                })
        }
        Architecture::MultiStyle26 => {
            let mut m = MultiStyle26::zeros(device);
            match m.load_from(&mut store) {
                Ok(r) => (Some(Network::MultiStyle26(m)), Some(r)),
                Err(e) => {
                    tracing::error!("{e}");
                    (None, None)
                }
            }
        }
    };
    let (Some(net), Some(result)) = (net, result) else {
        return Err(ModelError::Invalid(format!(
            "{}: not a valid burnpack file",
            wp.display()
        )));
    };
    if !result.missing.is_empty() || !result.unused.is_empty() || !result.errors.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: weights do not fit the {} network (missing {:?}, unused {:?}, errors {:?})",
            wp.display(),
            card.architecture.name(),
            result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
            result.unused,
            result.errors.len()
        )));
    }
    let params = match &net {
        Network::TransformerNet(m) => m.num_params(),
        Network::MultiStyle26(m) => m.num_params(),
    } as u64;
    if params != card.parameters {
        return Err(ModelError::Invalid(format!(
            "{}: {params} parameters loaded, the card says {}",
            wp.display(),
            card.parameters
        )));
    }
    Ok((card, net))
}
