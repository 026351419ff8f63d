//! The flags of every stage that runs the model (`evaluate`, `apply-prune`, `frontier`), with
//! one spelling and one meaning: the device's runtime settings (ONNX Runtime's, the GPU's) and
//! the evaluator's (windows a pass, the prefix cache, masks a block call).
//!
//! Why here: the methods that choose blocks (`apply-prune`, `frontier`) run the LLM as much as
//! `evaluate` does, and on a GPU they need the same levers (`--cuda-graphs`, `--mask-batch`,
//! ...); a pipeline passes one `EVALUATE_FLAGS` to all three, so a flag one of them lacked broke
//! the others. [`RuntimeFlags::check`] refuses, before any work, a setting the device cannot
//! have, by the runtime's own rules (`RuntimeOptions::check`), so each stage refuses it in the
//! same words, and as the run itself would.

use anyhow::Result;
use layerprune_runtime::{Arena, EvalOptions, GraphOptimization, RuntimeOptions};

use crate::{cache_bytes, count, Device, DeviceArgs, Switch};

/// The runtime and evaluator flags, with [`DeviceArgs`] the [`RuntimeFlags`] every stage that
/// runs the model flattens.
#[derive(clap::Args, Clone, Debug)]
pub struct RuntimeArgs {
    /// TensorFloat-32 matrix products on the CUDA provider (float32 models; absent: ONNX
    /// Runtime's default, on). A CUDA setting: `on` with --device cpu is an error.
    #[arg(long, value_enum)]
    pub tf32: Option<Switch>,
    /// Keep hidden states in the device's memory between block graphs (ONNX Runtime's
    /// IoBinding): auto = on for CUDA, off for the CPU (where they are in host memory anyway).
    /// Bit-identical results either way.
    #[arg(long, value_enum, default_value = "auto")]
    pub io_binding: AutoSwitch,
    /// On CUDA, queue every graph on one stream and let the host prepare the next block while
    /// the GPU runs this one, waiting only for the NLL (needs --io-binding on or auto): auto =
    /// on for CUDA with bound states, off otherwise. Same arithmetic, same order.
    #[arg(long, value_enum, default_value = "auto")]
    pub overlap: AutoSwitch,
    /// On CUDA, capture each block's kernels as a CUDA graph on its third run of a shape and
    /// replay it after, instead of launching them one by one from the host (needs --overlap
    /// on or auto). Same kernels; off by default: it paid on a 135M model (1.6-1.9x on an H100),
    /// not at 1.1B or 7B (0.96-1.12x); evaluate says when a run's launches set its pace.
    #[arg(long, value_enum, default_value = "off")]
    pub cuda_graphs: Switch,
    /// What each graph's memory arena does with the buffers a run freed: keep (for the next
    /// run; memory grows with graphs x the largest call), keep-exact (keep, each region the
    /// arena adds the size asked rather than double the last; CUDA only, not yet measured),
    /// shrink (give them back after every run: memory is the running graph's call plus the
    /// kept states, its buffers allocated again each call), off (no arena; the CPU only).
    /// auto = keep with one mask at a time; with --mask-batch over 1, off on the CPU and keep
    /// on CUDA. Same results.
    #[arg(long, value_enum, default_value = "auto")]
    pub arena: ArenaArg,
    /// Which of ONNX Runtime's rewrites of each graph run when it opens: layout (the default,
    /// at which every figure in docs/ was measured), all (any level ONNX Runtime has above
    /// it), extended (its fusions into its own kernels: normalisation, attention, GELU),
    /// basic (standard operators only, no fusions), off (every node as exported). For telling
    /// whether a fusion moves a result (an NLL, a node a provider refuses) and working around
    /// one; a level other than layout is recorded in the table (evaluated_on).
    #[arg(long, default_value = "layout", value_parser = graph_optimization_level())]
    pub graph_optimization: GraphOptimization,
    /// Windows per forward pass (0 = all together, unless the head's logits or a block's attention
    /// would pass 2 GiB: long windows run fewer a pass).
    #[arg(long, default_value_t = 0, value_parser = count(0, 100_000_000))]
    pub batch_windows: usize,
    /// Memory for cached prefix hidden states, in MiB (those a call keeps for its own masks and
    /// those kept for the next call's).
    #[arg(long, default_value_t = 1024, value_parser = count(0, crate::bounds::MAX_CACHE_MB))]
    pub cache_mb: usize,
    /// Run every mask from the embedding (for measuring what prefix reuse saves).
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Masks whose hidden states go through a block in one call (1 = one mask at a time).
    /// On a GPU a block of one mask is too small a matrix product to fill the device; with
    /// more, masks advance together and share each block call (bit-identical results on the
    /// CPU provider; on a CPU it is no faster). The states of the masks in flight count
    /// against --cache-mb (beyond it: a block call's joined tensors, and at least one call's
    /// masks). Racing methods measure their candidates a few windows at a time:
    /// on CUDA a call on part of the windows batches as many masks as fit one mask's full
    /// window batch whatever this says (a call of few windows costs about what a full one
    /// does there); more than that takes this.
    #[arg(long, default_value_t = 1, value_parser = count(1, 65_536), conflicts_with = "no_prefix_reuse")]
    pub mask_batch: usize,
}

/// `--device`, `--threads` and the runtime flags: flattened into every stage that runs the model
/// (`evaluate`, `apply-prune`, `frontier`), and alone into `evaluate check-runtime-flags`, so
/// that a workflow asks the stages, before it starts any job, whether they take its flags: one
/// type and one [`RuntimeFlags::check`] for both, rather than a copy kept in step by hand.
#[derive(clap::Args, Clone, Debug)]
pub struct RuntimeFlags {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl Default for RuntimeArgs {
    /// The flags as clap gives them when none is given: its attributes above are the one place
    /// the defaults are written.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct NoFlags {
            #[command(flatten)]
            runtime: RuntimeArgs,
        }
        <NoFlags as clap::Parser>::parse_from(["layerprune"]).runtime
    }
}

/// `--arena`: auto (the runtime's default for the device and --mask-batch) or a setting.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaArg {
    Auto,
    Keep,
    KeepExact,
    Shrink,
    Off,
}

impl ArenaArg {
    fn setting(self, device: Device, mask_batch: usize) -> Arena {
        match self {
            ArenaArg::Auto => Arena::default_for(device, mask_batch),
            ArenaArg::Keep => Arena::Keep,
            ArenaArg::KeepExact => Arena::KeepExact,
            ArenaArg::Shrink => Arena::Shrink,
            ArenaArg::Off => Arena::Off,
        }
    }
}

/// `--graph-optimization`: the runtime's levels by their names ([`GraphOptimization::name`]),
/// which clap lists and checks.
fn graph_optimization_level() -> impl clap::builder::TypedValueParser<Value = GraphOptimization> {
    use clap::builder::TypedValueParser;
    let names = GraphOptimization::LEVELS.map(GraphOptimization::name);
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| GraphOptimization::from_name(&name).expect("one of the levels' names"))
}

/// `--io-binding`, `--overlap`: auto (the runtime decides for the device), on or off.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoSwitch {
    Auto,
    On,
    Off,
}

impl AutoSwitch {
    /// The runtime's setting (`None`: its default for the device).
    fn setting(self) -> Option<bool> {
        match self {
            AutoSwitch::Auto => None,
            AutoSwitch::On => Some(true),
            AutoSwitch::Off => Some(false),
        }
    }
}

impl RuntimeFlags {
    /// Refuses, naming the flag, what the device cannot have, before any work: a --cache-mb
    /// that does not convert to bytes, and the settings the runtime refuses
    /// ([`RuntimeOptions::check`], worded in these flags): CUDA settings on the CPU, --overlap or
    /// --cuda-graphs without what they need, no arena on CUDA, a shrinking arena under CUDA
    /// graphs. The runtime's check is the one statement of those rules, so what this accepts
    /// (`evaluate check-runtime-flags`) is what a run accepts.
    pub fn check(&self) -> Result<()> {
        cache_bytes(self.runtime.cache_mb)?;
        self.runtime_options(true).check()?;
        Ok(())
    }

    /// The flags given a value other than their default: what a run that does not run the
    /// model (or runs it without some of them) must refuse rather than ignore.
    pub fn given(&self) -> Vec<&'static str> {
        let (device, flags) = (&self.device, &self.runtime);
        let defaults = RuntimeArgs::default();
        [
            ("--device", device.device != Device::Cpu),
            ("--threads", device.threads != 0),
            ("--tf32", flags.tf32 != defaults.tf32),
            ("--io-binding", flags.io_binding != defaults.io_binding),
            ("--overlap", flags.overlap != defaults.overlap),
            ("--cuda-graphs", flags.cuda_graphs != defaults.cuda_graphs),
            ("--arena", flags.arena != defaults.arena),
            (
                "--graph-optimization",
                flags.graph_optimization != defaults.graph_optimization,
            ),
            (
                "--batch-windows",
                flags.batch_windows != defaults.batch_windows,
            ),
            ("--cache-mb", flags.cache_mb != defaults.cache_mb),
            ("--no-prefix-reuse", flags.no_prefix_reuse),
            ("--mask-batch", flags.mask_batch != defaults.mask_batch),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// The runtime's settings for opening the model on the device (checked by
    /// [`RuntimeFlags::check`] before any work).
    pub fn runtime_options(&self, verify_hashes: bool) -> RuntimeOptions {
        let (device, flags) = (&self.device, &self.runtime);
        RuntimeOptions {
            device: device.device,
            threads: device.threads,
            verify_hashes,
            arena: flags.arena.setting(device.device, flags.mask_batch),
            io_binding: flags.io_binding.setting(),
            overlap: flags.overlap.setting(),
            cuda_graphs: flags.cuda_graphs == Switch::On,
            tf32: flags.tf32.map(|switch| switch == Switch::On),
            graph_optimization: flags.graph_optimization,
        }
    }

    /// The evaluator's settings: windows a pass, the prefix cache, masks a block call.
    pub fn eval_options(&self) -> Result<EvalOptions> {
        let flags = &self.runtime;
        Ok(EvalOptions {
            batch_windows: flags.batch_windows,
            cache_bytes: cache_bytes(flags.cache_mb)?,
            reuse_prefixes: !flags.no_prefix_reuse,
            mask_batch: flags.mask_batch,
            ..EvalOptions::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Stage {
        #[command(flatten)]
        runtime: RuntimeFlags,
    }

    fn parse(flags: &str) -> RuntimeFlags {
        Stage::try_parse_from(std::iter::once("stage").chain(flags.split_whitespace()))
            .expect("flags parse")
            .runtime
    }

    fn refusal(flags: &str) -> String {
        parse(flags).check().expect_err(flags).to_string()
    }

    #[test]
    fn cuda_settings_are_refused_on_the_cpu_naming_the_flag() {
        for flag in ["--tf32 on", "--overlap on", "--cuda-graphs on"] {
            let message = refusal(flag);
            assert!(message.starts_with(flag), "{flag}: {message}");
            assert!(message.contains("--device is cpu"), "{flag}: {message}");
        }
        assert!(refusal("--device cuda --arena off").starts_with("--arena off"));
        assert!(refusal("--device cuda --cuda-graphs on --overlap off").contains("--overlap off"));
        assert!(refusal("--device cuda --overlap on --io-binding off").contains("--io-binding off"));
        assert!(refusal("--device cuda --cuda-graphs on --arena shrink").contains("--arena shrink"));
        let message = refusal("--arena keep-exact");
        assert!(message.starts_with("--arena keep-exact"), "{message}");
        assert!(message.contains("--device is cpu"), "{message}");
        parse("--device cuda --arena keep-exact --cuda-graphs on --mask-batch 8")
            .check()
            .expect("CUDA settings");
        parse("--tf32 off --io-binding on --arena shrink --mask-batch 4")
            .check()
            .expect("CPU settings");
    }

    #[test]
    fn the_flags_given_are_those_away_from_their_defaults() {
        // The defaults written out are clap's.
        let none = parse("");
        assert_eq!(
            format!("{:?}", none.runtime),
            format!("{:?}", RuntimeArgs::default())
        );
        assert!(none.given().is_empty());
        let some = parse("--device cuda --threads 2 --mask-batch 4 --cache-mb 8 --tf32 off");
        assert_eq!(
            some.given(),
            [
                "--device",
                "--threads",
                "--tf32",
                "--cache-mb",
                "--mask-batch"
            ]
        );
        let rest = parse(
            "--io-binding on --overlap off --cuda-graphs on --arena keep --graph-optimization off \
             --batch-windows 2 --no-prefix-reuse",
        );
        assert_eq!(
            rest.given(),
            [
                "--io-binding",
                "--overlap",
                "--cuda-graphs",
                "--arena",
                "--graph-optimization",
                "--batch-windows",
                "--no-prefix-reuse"
            ]
        );
    }

    #[test]
    fn the_flags_become_the_runtime_and_evaluator_settings() {
        let stage = parse(
            "--threads 1 --io-binding on --mask-batch 4 --cache-mb 8 --batch-windows 2 --tf32 off \
             --graph-optimization basic",
        );
        let runtime = stage.runtime_options(false);
        assert_eq!(runtime.threads, 1);
        assert_eq!(runtime.graph_optimization, GraphOptimization::Basic);
        assert!(!runtime.verify_hashes);
        assert_eq!(runtime.io_binding, Some(true));
        assert_eq!(runtime.overlap, None);
        assert_eq!(runtime.tf32, Some(false));
        // Batched masks on the CPU: no arena (the runtime's default for the device).
        assert_eq!(runtime.arena, Arena::Off);
        let eval = stage.eval_options().expect("options");
        assert_eq!(
            (eval.mask_batch, eval.cache_bytes, eval.batch_windows),
            (4, 8 << 20, 2)
        );
        assert!(eval.reuse_prefixes);
        // The defaults are the runtime's and the evaluator's own.
        let stage = parse("");
        let runtime = stage.runtime_options(true);
        let default = RuntimeOptions::default();
        assert_eq!(
            (
                runtime.arena,
                runtime.io_binding,
                runtime.overlap,
                runtime.cuda_graphs,
                runtime.tf32,
                runtime.graph_optimization
            ),
            (
                default.arena,
                default.io_binding,
                default.overlap,
                default.cuda_graphs,
                default.tf32,
                default.graph_optimization
            )
        );
        let eval = stage.eval_options().expect("options");
        let default = EvalOptions::default();
        assert_eq!(
            (
                eval.mask_batch,
                eval.cache_bytes,
                eval.batch_windows,
                eval.reuse_prefixes
            ),
            (
                default.mask_batch,
                default.cache_bytes,
                default.batch_windows,
                default.reuse_prefixes
            )
        );
        assert!(
            Stage::try_parse_from(["stage", "--mask-batch", "2", "--no-prefix-reuse"]).is_err(),
            "batched masks need prefix reuse"
        );
    }

    /// The quoted `--flags` in the Python literal that follows `name = ` in the Snakefile.
    fn snakefile_flags(snakefile: &str, name: &str) -> Vec<String> {
        let start = snakefile
            .find(&format!("{name} = {{"))
            .unwrap_or_else(|| panic!("pipelines/Snakefile has no {name}"));
        let literal =
            &snakefile[start..start + snakefile[start..].find('}').expect("closing brace")];
        literal
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|word| word.starts_with("--"))
            .map(str::to_string)
            .collect()
    }

    /// The workflow takes --device, --threads and --cache-mb out of its `runtime_flags` (they
    /// are settings of its own: OWN_SETTINGS in pipelines/Snakefile, written by hand in Python);
    /// which other flags there are, and what they may be, it asks the stages (`evaluate
    /// check-runtime-flags`, which parses [`RuntimeFlags`]). Its own settings must be flags of
    /// the stages: this test says which one is not.
    #[test]
    fn the_workflows_own_settings_are_flags_of_the_stages() {
        use clap::CommandFactory;
        #[derive(Parser)]
        struct Check {
            #[command(flatten)]
            flags: RuntimeFlags,
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../pipelines/Snakefile");
        let snakefile = std::fs::read_to_string(path).expect("pipelines/Snakefile");
        let own_settings = snakefile_flags(&snakefile, "OWN_SETTINGS");
        assert_eq!(own_settings, ["--device", "--threads", "--cache-mb"]);
        let flags: Vec<String> = Check::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        for setting in own_settings {
            assert!(
                flags.contains(&setting),
                "{setting} is no flag of RuntimeFlags: {flags:?}"
            );
        }
    }
}
