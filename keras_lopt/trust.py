"""What a controller may contain: pure tensor math, checked before it is loaded.

A controller is a TensorFlow graph, and a graph can read and write files,
print, or call back into Python. LHOPT runs its controller inside every
training step, and `.keras` files embed it, so an untrusted controller is
untrusted code. Before a controller's SavedModel is loaded, every op of every
function in it (not only those `act` calls) is checked against
`ALLOWED_OPS`: arithmetic, comparisons, reductions, shapes, control flow,
stateless random numbers, and the controller's own variables.
Anything else (file and system I/O, printing, save/restore ops outside the
checkpoint functions, `py_func`, datasets, unseeded random ops, ...) makes
the controller unsafe; loading it then needs an explicit opt-in
(`LHOPT(..., safe_mode=False)`, or `keras.models.load_model(...,
safe_mode=False)` for a `.keras` file).

TensorFlow writes two functions into every SavedModel to save and restore its
variables (named by the graph's `saver_def`); `tf.saved_model.load` never runs
them, but they contain checkpoint ops (`SaveV2`, `RestoreV2`, ...). Those ops
are accepted there and only there, so long as no function the loaded object
can call reaches them.
"""

import collections

from tensorflow.core.protobuf import saved_model_pb2

ALLOWED_OPS = frozenset(
    """
    Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Atan Atan2 Atanh
    AvgPool BatchMatMul BatchMatMulV2 BatchMatMulV3 BiasAdd BroadcastArgs BroadcastGradientArgs
    BroadcastTo Cast Ceil ClipByValue Concat ConcatV2 ConcatOffset Conv2D Conv3D Cos Cosh Cumprod Cumsum
    DepthwiseConv2dNative Digamma Div DivNoNan Einsum Elu Equal Erf Erfc Exp ExpandDims Expm1 Fill
    Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV3 Gather GatherNd GatherV2 Greater
    GreaterEqual InvertPermutation IsFinite IsInf IsNan LeakyRelu Less LessEqual Lgamma LinSpace Log
    Log1p LogSoftmax LogicalAnd LogicalNot LogicalOr MatMul Max MaxPool Maximum Mean Min Minimum
    MirrorPad Mod Mul MulNoNan Neg NotEqual OneHot OnesLike Pack Pad PadV2 Pow Prod Range Rank RealDiv
    Reciprocal Relu Relu6 Reshape ReverseV2 Rint Round Rsqrt ScatterNd Select SelectV2 Selu Shape
    ShapeN Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign Split SplitV Sqrt Square
    SquaredDifference Squeeze StopGradient StridedSlice Sub Sum Tan Tanh TensorScatterAdd
    TensorScatterUpdate Tile TopKV2 Transpose TruncateDiv TruncateMod Unpack UnsortedSegmentSum Where
    Xdivy Xlog1py Xlogy ZerosLike EuclideanNorm
    Const Identity IdentityN EnsureShape CheckNumerics PreventGradient Snapshot NoOp Placeholder Assert
    If StatelessIf While StatelessWhile Case StatelessCase PartitionedCall StatefulPartitionedCall
    Enter Exit LoopCond Merge NextIteration Switch
    VarHandleOp ReadVariableOp VarIsInitializedOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp
    CudnnRNN CudnnRNNV2 CudnnRNNV3
    StatelessMultinomial StatelessRandomGetAlg StatelessRandomGetKeyCounter
    StatelessRandomGetKeyCounterAlg StatelessRandomNormal StatelessRandomNormalV2
    StatelessRandomUniform StatelessRandomUniformFullInt StatelessRandomUniformFullIntV2
    StatelessRandomUniformInt StatelessRandomUniformIntV2 StatelessRandomUniformV2
    StatelessTruncatedNormal StatelessTruncatedNormalV2
    """.split()
)

# Accepted only in the functions the SavedModel's saver_def names.
CHECKPOINT_OPS = frozenset(
    "SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename StringJoin StaticRegexFullMatch "
    "DisableCopyOnRead".split()
)


class UnsafeControllerError(ValueError):
    """A controller contains ops outside `ALLOWED_OPS`."""


def _calls(node, functions):
    """The library functions a node calls: by op name or through function attributes."""
    called = {node.op} & functions
    for value in node.attr.values():
        if value.HasField("func"):
            called.add(value.func.name)
        called.update(f.name for f in value.list.func)
    return called


def _reachable(roots, calls):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(calls.get(name, ()))
    return seen


def unsafe_ops(saved_model_pb):
    """The ops of a serialized SavedModel that a controller may not contain.

    Returns a dict: op name -> sorted names of the functions (or "graph") that
    use it; empty when the controller is safe. Raises `ValueError` if the
    bytes are not a TensorFlow 2 SavedModel.
    """
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(saved_model_pb)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"its saved_model.pb is not a SavedModel ({error}).") from None
    if len(saved_model.meta_graphs) != 1 or not saved_model.meta_graphs[0].object_graph_def.nodes:
        raise ValueError(
            "its saved_model.pb is not a TensorFlow 2 SavedModel with one object graph (as "
            "tf.saved_model.save writes); TensorFlow 1 SavedModels are not supported."
        )
    meta_graph = saved_model.meta_graphs[0]
    graph = meta_graph.graph_def
    names = {function.signature.name for function in graph.library.function}
    ops, calls = {}, {}
    for function in graph.library.function:
        name = function.signature.name
        ops[name] = {node.op for node in function.node_def} - names
        calls[name] = set().union(*(_calls(node, names) for node in function.node_def))

    by_name = {node.name: node for node in graph.node}
    saver = meta_graph.saver_def
    saver_nodes = [by_name.get(tensor.split(":")[0]) for tensor in (saver.save_tensor_name, saver.restore_op_name)]
    saver_roots = set().union(*(_calls(node, names) for node in saver_nodes if node is not None))
    object_functions = _reachable(meta_graph.object_graph_def.concrete_functions.keys(), calls)
    checkpoint_functions = _reachable(saver_roots, calls) - object_functions

    found = collections.defaultdict(set)
    for node in graph.node:
        if node.op not in ALLOWED_OPS and node.op not in names:
            found[node.op].add("graph")
    for name, function_ops in ops.items():
        allowed = ALLOWED_OPS | CHECKPOINT_OPS if name in checkpoint_functions else ALLOWED_OPS
        for op in function_ops - allowed:
            found[op].add(name)
    return {op: sorted(where) for op, where in sorted(found.items())}


def check(saved_model_pb, source):
    """Raises `UnsafeControllerError` naming `source` and its offending ops, unless it is safe
    (or `ValueError` if it is not a TensorFlow 2 SavedModel)."""
    try:
        found = unsafe_ops(saved_model_pb)
    except ValueError as error:
        raise ValueError(f"The controller {source} cannot be loaded: {error}") from None
    if found:
        listed = ", ".join(f"{op} (in {', '.join(where[:2])}{', ...' if len(where) > 2 else ''})"
                           for op, where in found.items())
        raise UnsafeControllerError(
            f"The controller {source} contains ops a controller may not contain, so it could do more "
            f"than compute hyperparameter moves: {listed}. keras_lopt only loads controllers made of "
            f"pure tensor math (keras_lopt.trust.ALLOWED_OPS). If you trust it, load it anyway with "
            f"LHOPT(policy=..., safe_mode=False), or for a .keras file with "
            f"keras.models.load_model(path, safe_mode=False)."
        )
