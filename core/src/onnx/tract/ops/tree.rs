//! `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ai.onnx.ml), as scikit-learn's trees,
//! forests and gradient boosting export them.
//!
//! tract 0.23.9 has no regressor, and its classifier picks the wrong label for binary trees whose
//! leaves only score the positive class (skl2onnx's layout for every binary tree model). Both ops
//! are one op here that follows onnxruntime's aggregation, base values, binary layouts and post
//! transforms, since onnxruntime is what these files are validated against.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

pub(crate) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleClassifier", |ctx, node| build(ctx, node, true));
    reg.insert("TreeEnsembleRegressor", |ctx, node| build(ctx, node, false));
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// One tree node. Thresholds and weights are kept as f64 bits so the op can derive `Hash`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TreeNode {
    /// Branch mode (0 = LEQ, LT, GTE, GT, EQ, NEQ = 5) or `u8::MAX` for a leaf.
    mode: u8,
    feature: usize,
    threshold: u64,
    missing_goes_true: bool,
    true_child: usize,
    false_child: usize,
    /// Leaf weights: `leaves[first..end]`.
    first: usize,
    end: usize,
}

const LEAF: u8 = u8::MAX;

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Forest {
    nodes: Vec<TreeNode>,
    roots: Vec<usize>,
    /// (target or class index, weight as f64 bits).
    leaves: Vec<(usize, u64)>,
    n_outputs: usize,
    n_features: usize,
    base: Vec<u64>,
    aggregate: Aggregate,
    post: Post,
    /// Classifier only: the class labels (int64 or string) and onnxruntime's binary flags.
    labels: Option<Arc<Tensor>>,
    binary_case: bool,
    all_positive: bool,
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// A float list attribute, or its `_as_tensor` (double) twin.
fn floats(ctx: &ParsingContext, node: &NodeProto, name: &str) -> TractResult<Option<Vec<f64>>> {
    if let Some(v) = node.get_attr_opt_vec::<f32>(name)? {
        return Ok(Some(v.into_iter().map(f64::from).collect()));
    }
    match node.get_attr_opt::<&tract_onnx::pb::TensorProto>(&format!("{name}_as_tensor"))? {
        Some(t) => {
            let t = ctx.load_tensor(t)?.cast_to::<f64>()?.into_owned();
            Ok(Some(t.try_as_plain_ram()?.as_slice::<f64>()?.to_vec()))
        }
        None => Ok(None),
    }
}

fn ints<'a>(node: &'a NodeProto, name: &str) -> TractResult<&'a [i64]> {
    Ok(node.get_attr_opt_slice::<i64>(name)?.unwrap_or(&[]))
}

fn build(ctx: &ParsingContext, node: &NodeProto, classifier: bool) -> Built {
    let (prefix, labels) = if classifier {
        let labels = match (
            node.get_attr_opt_slice::<i64>("classlabels_int64s")?,
            node.get_attr_opt_tvec::<String>("classlabels_strings")?,
        ) {
            (Some(ints), None) => tensor1(ints),
            (None, Some(strings)) => tensor1(&strings),
            _ => bail!("exactly one of classlabels_int64s and classlabels_strings must be set"),
        };
        ("class", Some(labels.into_arc_tensor()))
    } else {
        ("target", None)
    };
    let n_outputs = match &labels {
        Some(l) => l.len(),
        None => node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1).max(0) as usize,
    };
    node.expect(n_outputs > 0, "at least one class or target")?;

    let tree_ids = ints(node, "nodes_treeids")?;
    let node_ids = ints(node, "nodes_nodeids")?;
    let features = ints(node, "nodes_featureids")?;
    let true_ids = ints(node, "nodes_truenodeids")?;
    let false_ids = ints(node, "nodes_falsenodeids")?;
    let missing = ints(node, "nodes_missing_value_tracks_true")?;
    let modes = node
        .get_attr_opt_tvec::<String>("nodes_modes")?
        .unwrap_or_default();
    let values = floats(ctx, node, "nodes_values")?.unwrap_or_default();
    let n = tree_ids.len();
    node.expect(n > 0, "at least one tree node")?;
    for (name, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", features.len()),
        ("nodes_truenodeids", true_ids.len()),
        ("nodes_falsenodeids", false_ids.len()),
        ("nodes_modes", modes.len()),
        ("nodes_values", values.len()),
    ] {
        node.expect_attr(name, len == n, || {
            format!("{n} entries like nodes_treeids, got {len}")
        })?;
    }
    node.expect_attr(
        "nodes_missing_value_tracks_true",
        missing.is_empty() || missing.len() == n,
        "one entry per node",
    )?;

    let mut index = std::collections::HashMap::new();
    for i in 0..n {
        node.expect(
            index.insert((tree_ids[i], node_ids[i]), i).is_none(),
            || format!("tree {} node {} defined once", tree_ids[i], node_ids[i]),
        )?;
    }
    let child = |i: usize, id: i64| -> TractResult<usize> {
        index.get(&(tree_ids[i], id)).copied().with_context(|| {
            format!(
                "tree {} node {} points to missing node {id}",
                tree_ids[i], node_ids[i]
            )
        })
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mode = match modes[i].as_str() {
            "BRANCH_LEQ" => 0,
            "BRANCH_LT" => 1,
            "BRANCH_GTE" => 2,
            "BRANCH_GT" => 3,
            "BRANCH_EQ" => 4,
            "BRANCH_NEQ" => 5,
            "LEAF" => LEAF,
            other => bail!("unknown node mode {other:?}"),
        };
        let (true_child, false_child) = if mode == LEAF {
            (0, 0)
        } else {
            (child(i, true_ids[i])?, child(i, false_ids[i])?)
        };
        nodes.push(TreeNode {
            mode,
            feature: usize::try_from(features[i]).context("negative feature id")?,
            threshold: values[i].to_bits(),
            missing_goes_true: missing.get(i).is_some_and(|&m| m != 0),
            true_child,
            false_child,
            first: 0,
            end: 0,
        });
    }

    // Leaf weights, grouped by leaf node.
    let w_tree = ints(node, &format!("{prefix}_treeids"))?;
    let w_node = ints(node, &format!("{prefix}_nodeids"))?;
    let w_id = ints(node, &format!("{prefix}_ids"))?;
    let w_value = floats(ctx, node, &format!("{prefix}_weights"))?.unwrap_or_default();
    let m = w_id.len();
    node.expect(
        w_tree.len() == m && w_node.len() == m && w_value.len() == m,
        || format!("{prefix}_treeids, _nodeids, _ids and _weights of equal length"),
    )?;
    let mut per_leaf: Vec<Vec<(usize, u64)>> = vec![vec![]; n];
    for k in 0..m {
        let at = *index.get(&(w_tree[k], w_node[k])).with_context(|| {
            format!(
                "weight {k} refers to missing node {} of tree {}",
                w_node[k], w_tree[k]
            )
        })?;
        let target = usize::try_from(w_id[k]).ok().filter(|&t| t < n_outputs);
        let target =
            target.with_context(|| format!("{prefix}_ids[{k}] = {} out of range", w_id[k]))?;
        per_leaf[at].push((target, w_value[k].to_bits()));
    }
    let mut leaves = Vec::with_capacity(m);
    for (i, weights) in per_leaf.into_iter().enumerate() {
        nodes[i].first = leaves.len();
        leaves.extend(weights);
        nodes[i].end = leaves.len();
    }

    // Roots: node 0 of every tree, in tree id order. Trees must be acyclic, or eval never ends.
    let mut trees: Vec<i64> = tree_ids.to_vec();
    trees.sort_unstable();
    trees.dedup();
    let mut roots = Vec::with_capacity(trees.len());
    for t in trees {
        let root = *index
            .get(&(t, 0))
            .with_context(|| format!("tree {t} has no node 0"))?;
        check_acyclic(&nodes, root).with_context(|| format!("tree {t}"))?;
        roots.push(root);
    }

    let base = floats(ctx, node, "base_values")?.unwrap_or_default();
    let post = match node
        .get_attr_opt::<String>("post_transform")?
        .as_deref()
        .unwrap_or("NONE")
    {
        "NONE" => Post::None,
        "LOGISTIC" => Post::Logistic,
        "SOFTMAX" => Post::Softmax,
        "SOFTMAX_ZERO" => Post::SoftmaxZero,
        other => bail!("post_transform {other} is not supported"),
    };
    let aggregate = match node
        .get_attr_opt::<String>("aggregate_function")?
        .as_deref()
        .unwrap_or("SUM")
    {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("aggregate_function {other} is not supported"),
    };
    let classes: std::collections::HashSet<i64> = w_id.iter().copied().collect();
    let forest = Forest {
        n_features: nodes
            .iter()
            .filter(|n| n.mode != LEAF)
            .map(|n| n.feature + 1)
            .max()
            .unwrap_or(0),
        nodes,
        roots,
        leaves,
        n_outputs,
        base: base.iter().map(|b| b.to_bits()).collect(),
        aggregate: if classifier {
            Aggregate::Sum
        } else {
            aggregate
        },
        post,
        binary_case: classifier && n_outputs == 2 && classes.len() == 1,
        all_positive: w_value.iter().all(|&w| w >= 0.0),
        labels,
    };
    Ok((expand(TreeEnsemble(Arc::new(forest))), vec![]))
}

fn check_acyclic(nodes: &[TreeNode], root: usize) -> TractResult<()> {
    let mut seen = vec![false; nodes.len()];
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        ensure!(!seen[i], "the tree is not a tree: node reached twice");
        seen[i] = true;
        if nodes[i].mode != LEAF {
            stack.extend([nodes[i].true_child, nodes[i].false_child]);
        }
    }
    Ok(())
}

impl Forest {
    /// The leaf a row lands in, for one tree.
    fn leaf(&self, root: usize, row: &[f64]) -> &TreeNode {
        let mut node = &self.nodes[root];
        while node.mode != LEAF {
            let x = row[node.feature];
            let t = f64::from_bits(node.threshold);
            let go_true = match node.mode {
                0 => x <= t,
                1 => x < t,
                2 => x >= t,
                3 => x > t,
                4 => x == t,
                _ => x != t,
            } || (node.missing_goes_true && x.is_nan());
            node = &self.nodes[if go_true {
                node.true_child
            } else {
                node.false_child
            }];
        }
        node
    }

    /// Raw per-output scores of one row, and whether any leaf scored each output.
    fn scores(&self, row: &[f64]) -> (Vec<f64>, Vec<bool>) {
        let mut score = vec![0.0; self.n_outputs];
        let mut has = vec![false; self.n_outputs];
        for &root in &self.roots {
            let leaf = self.leaf(root, row);
            for &(k, w) in &self.leaves[leaf.first..leaf.end] {
                let w = f64::from_bits(w);
                score[k] = match (self.aggregate, has[k]) {
                    (_, false) => w,
                    (Aggregate::Min, true) => score[k].min(w),
                    (Aggregate::Max, true) => score[k].max(w),
                    _ => score[k] + w,
                };
                has[k] = true;
            }
        }
        if self.aggregate == Aggregate::Average {
            score.iter_mut().for_each(|s| *s /= self.roots.len() as f64);
        }
        (score, has)
    }

    fn base(&self, k: usize) -> f64 {
        self.base.get(k).map_or(0.0, |b| f64::from_bits(*b))
    }

    /// A regressor row: scores plus base values, then the post transform (which onnxruntime
    /// skips for a single target).
    fn regress(&self, row: &[f64], out: &mut [f32]) {
        let (mut score, _) = self.scores(row);
        for (k, s) in score.iter_mut().enumerate() {
            *s += self.base(k);
        }
        write_scores(
            &mut score,
            if self.n_outputs > 1 {
                self.post
            } else {
                Post::None
            },
            out,
        );
    }

    /// A classifier row: the winning class index and the class scores, as onnxruntime computes
    /// them (including its layouts for two classes).
    fn classify(&self, row: &[f64], out: &mut [f32]) -> usize {
        let (mut s, mut has) = self.scores(row);
        if self.n_outputs > 2 {
            for k in 0..self.base.len().min(s.len()) {
                s[k] = if has[k] {
                    s[k] + self.base(k)
                } else {
                    self.base(k)
                };
                has[k] = true;
            }
            let mut best: Option<usize> = None;
            for k in 0..s.len() {
                if has[k] && best.is_none_or(|b| s[k] > s[b]) {
                    best = Some(k);
                }
            }
            write_scores(&mut s, self.post, out);
            return best.unwrap_or(0);
        }
        let mut second_class = None;
        match self.base.len() {
            2 if has[1] => {
                s[1] = self.base(1) + s[0];
                s[0] = -s[1];
            }
            2 => {
                s[1] += self.base(1);
                s[0] += self.base(0);
            }
            1 => s[0] += self.base(0),
            _ => second_class = Some(3),
        }
        let pos = if has[1] {
            s[1]
        } else if has[0] {
            s[0]
        } else {
            0.0
        };
        let label = if self.binary_case {
            let (wins, layout) = if self.all_positive {
                (pos > 0.5, [0, 1])
            } else {
                (pos > 0.0, [2, 3])
            };
            second_class = Some(if wins { layout[0] } else { layout[1] });
            wins as usize
        } else {
            (pos > 0.0) as usize
        };
        if self.base.len() == 2 || has[1] {
            write_scores(&mut s, self.post, out);
        } else {
            // One score: onnxruntime writes its complement (or its negation) beside it.
            let v = s[0];
            let pair = match second_class {
                Some(0 | 1) => [1.0 - v, v],
                Some(_) if self.post == Post::Logistic => [logistic(-v), logistic(v)],
                Some(_) => [-v, v],
                None => [v, 0.0],
            };
            out[0] = pair[0] as f32;
            out[1] = pair[1] as f32;
        }
        label
    }
}

fn logistic(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

fn write_scores(s: &mut [f64], post: Post, out: &mut [f32]) {
    match post {
        Post::None => {}
        Post::Logistic => s.iter_mut().for_each(|v| *v = logistic(*v)),
        Post::Softmax | Post::SoftmaxZero => {
            let zero = post == Post::SoftmaxZero;
            let max = s.iter().copied().fold(f64::MIN, f64::max);
            let mut sum = 0.0;
            for v in s.iter_mut() {
                // SOFTMAX_ZERO leaves exact zeros out of the normalisation.
                *v = if zero && v.abs() <= 1e-7 {
                    *v * (-max).exp()
                } else {
                    (*v - max).exp()
                };
                sum += *v;
            }
            s.iter_mut().for_each(|v| *v /= sum);
        }
    }
    for (o, v) in out.iter_mut().zip(s.iter()) {
        *o = *v as f32;
    }
}

/// The op in the inference graph; it wires [`TreeEval`], which does the work.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TreeEnsemble(Arc<Forest>);

impl Expansion for TreeEnsemble {
    fn name(&self) -> StaticName {
        if self.0.labels.is_some() {
            "TreeEnsembleClassifier"
        } else {
            "TreeEnsembleRegressor"
        }
        .into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.labels.is_some() { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, self.nboutputs()?)?;
        let scores = &outputs[outputs.len() - 1];
        s.equals(&scores.datum_type, f32::datum_type())?;
        s.equals(&scores.rank, 2)?;
        s.equals(&scores.shape[1], self.0.n_outputs.to_dim())?;
        if let Some(labels) = &self.0.labels {
            s.equals(&outputs[0].datum_type, labels.datum_type())?;
            s.equals(&outputs[0].rank, 1)?;
            s.equals(&outputs[0].shape[0], &scores.shape[0])?;
        }
        s.given(&inputs[0].rank, move |s, rank| {
            if rank == 2 {
                s.equals(&scores.shape[0], &inputs[0].shape[0])?;
            } else {
                s.equals(&scores.shape[0], 1.to_dim())?;
            }
            Ok(())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, TreeEval(self.0.clone()), inputs)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TreeEval(Arc<Forest>);

impl Op for TreeEval {
    fn name(&self) -> StaticName {
        "TreeEnsemble".into()
    }
    op_as_typed_op!();
}

impl EvalOp for TreeEval {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let forest = &*self.0;
        let x = args_1!(inputs).cast_to::<f64>()?.into_owned();
        let x = x.to_plain_array_view::<f64>()?;
        let (rows, width) = match x.shape() {
            [n, f] => (*n, *f),
            [f] => (1, *f),
            other => bail!("expected a [N, features] input, got shape {other:?}"),
        };
        ensure!(
            width >= forest.n_features,
            "the trees read feature {} but the input has {width} features",
            forest.n_features - 1
        );
        let x = x.as_standard_layout().into_owned();
        let x = x.as_slice().context("contiguous input")?;
        let mut scores = vec![0f32; rows * forest.n_outputs];
        let mut winners = Vec::with_capacity(rows);
        for (r, out) in scores.chunks_mut(forest.n_outputs).enumerate() {
            let row = &x[r * width..(r + 1) * width];
            match forest.labels {
                Some(_) => winners.push(forest.classify(row, out)),
                None => forest.regress(row, out),
            }
        }
        let scores = tensor1(&scores)
            .into_shape(&[rows, forest.n_outputs])?
            .into_tvalue();
        let Some(labels) = &forest.labels else {
            return Ok(tvec!(scores));
        };
        let mut out = Tensor::zero_dt(labels.datum_type(), &[rows])?;
        for (r, &w) in winners.iter().enumerate() {
            out.assign_slice(r..r + 1, labels, w..w + 1, 0)?;
        }
        Ok(tvec!(out.into_tvalue(), scores))
    }
}

impl TypedOp for TreeEval {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = if inputs[0].rank() == 2 {
            inputs[0].shape[0].clone()
        } else {
            1.to_dim()
        };
        let scores = f32::fact([rows.clone(), self.0.n_outputs.to_dim()]);
        Ok(match &self.0.labels {
            Some(labels) => tvec!(labels.datum_type().fact([rows]), scores),
            None => tvec!(scores),
        })
    }

    as_op!();
}
