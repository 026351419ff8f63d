//! What every stage binary shares, so each binary stays a thin `clap` front over library
//! crates: how a stage reports failure (one message naming the file and the problem, exit
//! status 2), the `--device`/`--threads` flags, and the argument list recorded as provenance
//! in every file a stage writes.

use std::process::ExitCode;
use std::str::FromStr;

/// Runs a stage's body and turns an error into a message on stderr and exit status 2.
/// Every stage's `main` is `layerprune_cli_common::run(|| body(Args::parse()))`.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let program = std::env::args()
                .next()
                .and_then(|p| {
                    std::path::Path::new(&p)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "layerprune".into());
            eprintln!("{program}: error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

/// The command line as given, for the `args` provenance entry of output files.
pub fn command_line() -> Vec<String> {
    std::env::args().collect()
}

/// Where ONNX Runtime runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by index. Requesting it where the CUDA execution provider cannot be
    /// registered is an error, never a silent fall-back to the CPU.
    Cuda(u32),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match text.strip_prefix("cuda:") {
                Some(index) => index.parse().map(Device::Cuda).map_err(|_| {
                    format!("device {text:?}: the GPU index after 'cuda:' must be a number")
                }),
                None => Err(format!(
                    "device {text:?} is not one of cpu, cuda, cuda:N (N = GPU index)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// `--device` and `--threads`, flattened into every stage that runs the model.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where to run the model: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// CPU threads for ONNX Runtime (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_bad_ones_say_why() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("cuda:x".parse::<Device>().unwrap_err().contains("number"));
        assert!("tpu".parse::<Device>().unwrap_err().contains("cpu, cuda"));
    }
}
