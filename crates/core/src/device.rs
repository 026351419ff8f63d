//! Where a model runs.

use std::str::FromStr;

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
