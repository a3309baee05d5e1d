//! `Trainer`: build a model once, derive its backward graph, compile once,
//! then call `step` many times.

use crate::compile::{compile, compile_program, CompileOptions};
use crate::dtype::Feed;
use crate::error::{KilnError, Result};
use crate::exec::Executable;
use crate::graph::{Graph, NodeId, Program};
use crate::optim::{check_lr, LrSchedule, Optimizer, ParamGrad, LR};
use crate::tensor::Tensor;
use crate::weights;
use std::path::Path;

/// Adds to `graph` the backward graph of `loss` for every trainable parameter
/// and `optimizer`'s update ops; returns the `(state or parameter, new value)`
/// updates a training step applies: the optimiser's, then the layers' own
/// ([`Graph::state_updates`], e.g. BatchNorm's running statistics).
pub fn training_step(
    graph: &mut Graph,
    loss: NodeId,
    optimizer: &dyn Optimizer,
) -> Result<Vec<(NodeId, NodeId)>> {
    let params = graph.trainable_params();
    if params.is_empty() {
        return Err(KilnError::Invalid(
            "trainer: the graph has no trainable parameters".into(),
        ));
    }
    let ids: Vec<NodeId> = params.iter().map(|p| p.1).collect();
    let grads = graph.grad(loss, &ids)?;
    let pg: Vec<ParamGrad> = params
        .iter()
        .zip(grads)
        .map(|((name, param), grad)| ParamGrad {
            name: name.clone(),
            param: *param,
            grad,
        })
        .collect();
    let mut updates = optimizer.build(graph, &pg)?;
    updates.extend_from_slice(graph.state_updates());
    Ok(updates)
}

/// Name of the step count in a checkpoint ([`Trainer::save_checkpoint`]).
const STEPS: &str = "trainer.steps";

/// A compiled training step (forward, backward, optimiser update) plus a
/// compiled forward-only evaluation of chosen outputs.
pub struct Trainer {
    graph: Graph,
    step: Executable,
    eval: Executable,
    loss: NodeId,
    trainable: Vec<String>,
    /// Layer state the step updates and evaluation reads (running statistics).
    buffers: Vec<String>,
    eval_stale: bool,
    /// Steps taken (the schedule's clock).
    steps: u64,
    schedule: Option<Box<dyn LrSchedule>>,
}

impl Trainer {
    /// Derives gradients of `loss` for every trainable parameter of `graph`,
    /// adds `optimizer`'s updates and compiles the training step.
    /// [`Trainer::evaluate`] returns `[loss]`.
    pub fn new(graph: Graph, loss: NodeId, optimizer: impl Optimizer) -> Result<Self> {
        Self::with_outputs(graph, loss, &[loss], optimizer)
    }

    /// As [`Trainer::new`], with [`Trainer::evaluate`] returning `outputs`
    /// (e.g. the logits) instead of the loss.
    ///
    /// Both graphs compile with [`CompileOptions::default`]; with env
    /// `KILN_DUMP=dir` the training step's pass dumps go to `dir/train-step`
    /// and the evaluation's to `dir/evaluate`.
    pub fn with_outputs(
        mut graph: Graph,
        loss: NodeId,
        outputs: &[NodeId],
        optimizer: impl Optimizer,
    ) -> Result<Self> {
        let params = graph.trainable_params();
        let buffers = graph
            .state_updates()
            .iter()
            .map(|&(s, _)| Ok(graph.node(s)?.name.clone().unwrap_or_default()))
            .collect::<Result<Vec<String>>>()?;
        let updates = training_step(&mut graph, loss, &optimizer)?;
        // each compiled graph dumps (env KILN_DUMP=dir) into its own subfolder
        let options = CompileOptions::default();
        let sub = |name: &str| CompileOptions {
            dump_dir: options.dump_dir.as_ref().map(|d| d.join(name)),
            ..options.clone()
        };
        let program = Program {
            graph: graph.clone(),
            outputs: vec![loss],
            updates,
        };
        let train = CompileOptions {
            training: true,
            ..sub("train-step")
        };
        let step = compile_program(program, &train)?;
        let eval = compile(&graph, outputs, &sub("evaluate"))?;
        Ok(Trainer {
            graph,
            step,
            eval,
            loss,
            trainable: params.into_iter().map(|p| p.0).collect(),
            buffers,
            eval_stale: false,
            steps: 0,
            schedule: None,
        })
    }

    /// One training step on a batch: returns the loss before the update.
    ///
    /// `Err`, and nothing updated, if a feed is missing, unknown, of the
    /// wrong shape or type, or holds an index out of range: a class label
    /// outside `0..C` (other than `ignore_index`) of a cross-entropy, an
    /// embedding index outside its table (PyTorch raises there too; the
    /// message names the feed, the position and the value).
    pub fn step(&mut self, feeds: &[(&str, &dyn Feed)]) -> Result<f32> {
        if let Some(s) = &self.schedule {
            let lr = s.lr(self.steps);
            self.set_learning_rate(lr).map_err(|e| {
                KilnError::Invalid(format!(
                    "learning-rate schedule at step {}: {e}",
                    self.steps
                ))
            })?;
        }
        let out = self.step.run(feeds)?;
        self.eval_stale = true;
        self.steps += 1;
        Ok(out[0].data()[0])
    }

    /// Sets the learning rate of every following step from `schedule`, by
    /// the number of steps taken so far ([`Trainer::steps`]): step `t` runs
    /// at `schedule.lr(t)`. A rate the optimisers would refuse (negative,
    /// not finite) makes that step an `Err`, naming it, with nothing
    /// updated. `Err` naming the option, and nothing changed, when the
    /// schedule's settings are out of range ([`LrSchedule::check`]).
    pub fn set_lr_schedule(&mut self, schedule: impl LrSchedule + 'static) -> Result<()> {
        schedule.check()?;
        self.schedule = Some(Box::new(schedule));
        Ok(())
    }

    /// The number of training steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Runs the evaluation outputs forward only, compiled for evaluation
    /// (dropout off, BatchNorm on its running statistics), with the current
    /// parameters and buffers. Feeds are checked as in [`Trainer::step`].
    pub fn evaluate(&mut self, feeds: &[(&str, &dyn Feed)]) -> Result<Vec<Tensor>> {
        if self.eval_stale {
            for name in self.trainable.iter().chain(&self.buffers) {
                let data = self
                    .step
                    .param_data(name)
                    .expect("trainable parameters and buffers live in the step");
                if self.eval.param_data(name).is_some() {
                    self.eval.set_param_data(name, data)?;
                }
            }
            self.eval_stale = false;
        }
        self.eval.run(feeds)
    }

    /// Starts (or stops) timing every op of the training step (see [`Trainer::step_profile`]).
    pub fn set_profiling(&mut self, on: bool) {
        self.step.set_profiling(on);
    }

    /// Time per op kind of the training steps since profiling started.
    pub fn step_profile(&self) -> Option<&crate::exec::Profile> {
        self.step.profile()
    }

    /// Changes the learning rate for the following steps (like setting
    /// `param_group["lr"]` in PyTorch). `Err` naming the value, and nothing
    /// changed, unless `lr` is finite and ≥ 0, the range the optimisers'
    /// constructors accept.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        check_lr(lr)?;
        self.step.set_param(LR, &Tensor::scalar(lr))
    }

    /// The trainable parameters' current values, sorted by name
    /// (`torch.nn.Module.named_parameters`).
    pub fn params(&self) -> Vec<(String, Tensor)> {
        self.values(&self.trainable)
    }

    /// The layers' state tensors that training updates, such as BatchNorm's
    /// `running_mean`, `running_var` and `num_batches_tracked`, in the
    /// order the layers declared them (`torch.nn.Module.named_buffers`).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.values(&self.buffers)
    }

    fn values(&self, names: &[String]) -> Vec<(String, Tensor)> {
        names
            .iter()
            .map(|n| (n.clone(), self.step.param(n).expect("lives in the step")))
            .collect()
    }

    /// Saves the trainable parameters and the buffers (PyTorch's
    /// `state_dict`) to a safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut all = self.params();
        all.extend(self.buffers());
        weights::save(path, &all)
    }

    /// Loads trainable parameters and buffers from a safetensors file
    /// written by [`Trainer::save`]. `Err` (and nothing changed) if the file
    /// cannot be read, lacks one of them, or holds one of another shape.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let loaded = weights::load(path)?;
        let names: Vec<String> = self
            .trainable
            .iter()
            .chain(&self.buffers)
            .cloned()
            .collect();
        self.set_from(path, &loaded, &names)
    }

    /// Sets the step's parameters `names` from `loaded` (read from `path`),
    /// after checking that each is there with its shape: `Err` naming the
    /// first that is not, and nothing changed.
    fn set_from(
        &mut self,
        path: &Path,
        loaded: &[(String, Tensor)],
        names: &[String],
    ) -> Result<()> {
        let find = |name: &str| loaded.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        for name in names {
            let Some(t) = find(name) else {
                return Err(KilnError::Invalid(format!(
                    "{}: no tensor named `{name}`",
                    path.display()
                )));
            };
            let want = self.graph.shape_of_param(name)?;
            if t.shape() != want {
                return Err(KilnError::Invalid(format!(
                    "{}: tensor `{name}` has shape {:?}, the model's parameter has {want:?}",
                    path.display(),
                    t.shape()
                )));
            }
        }
        for name in names {
            self.step
                .set_param(name, find(name).expect("checked above"))?;
        }
        self.eval_stale = true;
        Ok(())
    }

    /// Saves everything a run needs to continue: the parameters, the
    /// buffers, the optimiser's state (momentum and moment buffers, the
    /// learning rate, Adam's β powers) and the step count, to a safetensors
    /// file. The step count is the tensor `trainer.steps` `[2]`: its low and
    /// high 24 bits (each exact in f32).
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut all: Vec<(String, Tensor)> = self
            .step
            .param_names()
            .map(|n| {
                (
                    n.to_string(),
                    self.step.param(n).expect("named by the step"),
                )
            })
            .collect();
        let split = [(self.steps & 0xFF_FFFF) as f32, (self.steps >> 24) as f32];
        all.push((STEPS.into(), Tensor::from_vec([2], split.to_vec())?));
        weights::save(path, &all)
    }

    /// Continues from a file written by [`Trainer::save_checkpoint`] for a
    /// trainer of the same model and optimiser: every parameter, buffer and
    /// optimiser state, and the step count (which a learning-rate schedule
    /// reads). `Err`, and nothing changed, if the file cannot be read, lacks
    /// one of them (a file written by [`Trainer::save`] holds no optimiser
    /// state) or holds one of another shape.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let loaded = weights::load(path)?;
        let steps = loaded.iter().find(|(n, _)| n == STEPS).ok_or_else(|| {
            KilnError::Invalid(format!(
                "{}: no tensor named `{STEPS}` (is it a checkpoint of this model and optimiser, written by save_checkpoint?)",
                path.display()
            ))
        })?;
        let (lo, hi) = match steps.1.data() {
            &[lo, hi] if lo.fract() == 0.0 && hi.fract() == 0.0 && lo >= 0.0 && hi >= 0.0 => {
                (lo, hi)
            }
            d => {
                return Err(KilnError::Invalid(format!(
                    "{}: `{STEPS}` holds {d:?}, not a step count",
                    path.display()
                )))
            }
        };
        let names: Vec<String> = self.step.param_names().map(String::from).collect();
        self.set_from(path, &loaded, &names)?;
        self.steps = lo as u64 | (hi as u64) << 24;
        Ok(())
    }

    /// The full graph: forward, backward and optimiser update.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The loss node.
    pub fn loss(&self) -> NodeId {
        self.loss
    }
}
