"""The PPO agent (docs/design.md, "Agent and tasks").

Actor: dense 256 -> LayerNorm-LSTM 256 -> dense 256 -> one categorical head per
hyperparameter, seeing only LHOPT's features (the deployed controller's input).
Critic: the same shape with a plain LSTM, seeing the features and the
privileged critic inputs (an asymmetric actor-critic). Observations are
normalised by the agent's running statistics and clipped, rewards are not
(they are already log speedups). TF-Agents networks are Keras 2 (`tf_keras`,
see training/__init__.py); the tasks keep using Keras 3.
"""


import gin
import numpy as np
import tensorflow as tf
import tf_keras
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.keras_layers import dynamic_unroll_layer
from tf_agents.networks import actor_distribution_rnn_network, categorical_projection_network
from tf_agents.networks import value_rnn_network

from keras_lopt import actions

LOGITS_LAYER = "logits"  # each action head's output layer (training.policy_io.warm_start scales it)


@tf_keras.utils.register_keras_serializable(package="keras_lopt")
class LayerNormLSTMCell(tf_keras.layers.AbstractRNNCell):
    """An LSTM cell with layer normalisation of its gate inputs and cell state
    (Ba et al., 2016), which keeps the recurrent policy stable across tasks."""

    def __init__(self, units, forget_bias=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.forget_bias = forget_bias
        self.input_kernel = tf_keras.layers.Dense(4 * units, use_bias=False, name="input_kernel")
        self.recurrent_kernel = tf_keras.layers.Dense(
            4 * units, use_bias=False, kernel_initializer="orthogonal", name="recurrent_kernel"
        )
        self.input_norm = tf_keras.layers.LayerNormalization(name="input_norm")
        self.recurrent_norm = tf_keras.layers.LayerNormalization(name="recurrent_norm")
        self.cell_norm = tf_keras.layers.LayerNormalization(name="cell_norm")

    @property
    def state_size(self):
        return [self.units, self.units]

    @property
    def output_size(self):
        return self.units

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(4 * self.units,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, states):
        h, c = states
        z = self.input_norm(self.input_kernel(inputs)) + self.recurrent_norm(self.recurrent_kernel(h)) + self.bias
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f + self.forget_bias) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(self.cell_norm(c))
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "forget_bias": self.forget_bias}


def layer_norm_lstm(units):
    return dynamic_unroll_layer.DynamicUnroll(LayerNormLSTMCell(units))


@tf_keras.utils.register_keras_serializable(package="keras_lopt")
class DropFeatures(tf_keras.layers.Layer):
    """Outputs zero features: how the actor ignores the critic-only inputs."""

    def call(self, inputs):
        return inputs[..., :0]


@gin.configurable
def noop_biased_projection(action_spec, noop_logit=3.0):
    """A categorical head whose initial logits favour its no-op choice.

    With uniform initial logits every head moves its hyperparameter at almost
    every control step, and the random walk ruins most early episodes; with
    the no-op favoured (3.0: 77% for the 7-way learning-rate head, 91% for the
    3-way heads) an untrained policy mostly keeps the initial settings.
    """
    network = categorical_projection_network.CategoricalProjectionNetwork(action_spec)
    head = next(h for h in actions.ACTION_HEADS if h.hyperparameter == action_spec.name)
    bias = np.zeros(len(head.choices), np.float32)
    bias[head.noop] = noop_logit
    network._projection_layer = tf_keras.layers.Dense(  # replaces the zero-bias layer before it is built
        len(head.choices),
        kernel_initializer=tf_keras.initializers.VarianceScaling(scale=0.1),
        bias_initializer=tf_keras.initializers.Constant(bias),
        name=LOGITS_LAYER,
    )
    return network


def _actor_preprocessing():
    return {"observation": tf_keras.layers.Flatten(), "critic": DropFeatures()}


@gin.configurable
def create_networks(observation_spec, action_spec, input_fc=(256,), lstm_units=256, output_fc=(256,)):
    """The actor and value networks (sizes as in the paper)."""
    actor = actor_distribution_rnn_network.ActorDistributionRnnNetwork(
        observation_spec,
        action_spec,
        preprocessing_layers=_actor_preprocessing(),
        preprocessing_combiner=tf_keras.layers.Concatenate(axis=-1),
        input_fc_layer_params=tuple(input_fc),
        output_fc_layer_params=tuple(output_fc),
        rnn_construction_fn=layer_norm_lstm,
        rnn_construction_kwargs={"units": lstm_units},
        discrete_projection_net=noop_biased_projection,
    )
    value = value_rnn_network.ValueRnnNetwork(
        observation_spec,
        preprocessing_layers={"observation": tf_keras.layers.Flatten(), "critic": tf_keras.layers.Flatten()},
        preprocessing_combiner=tf_keras.layers.Concatenate(axis=-1),
        input_fc_layer_params=tuple(input_fc),
        lstm_size=(lstm_units,),
        output_fc_layer_params=tuple(output_fc),
    )
    return actor, value


@gin.configurable
def create_agent(
    time_step_spec,
    action_spec,
    train_step_counter,
    learning_rate=2e-4,
    importance_ratio_clipping=0.2,
    entropy_regularization=1e-2,
    lambda_value=0.95,
    discount_factor=1.0,
    num_epochs=10,
    value_pred_loss_coef=0.5,
    gradient_clipping=0.5,
):
    """A PPOClipAgent with the paper's settings as defaults (gin-configurable)."""
    actor, value = create_networks(time_step_spec.observation, action_spec)
    agent = ppo_clip_agent.PPOClipAgent(
        time_step_spec,
        action_spec,
        optimizer=tf_keras.optimizers.Adam(learning_rate=learning_rate),
        actor_net=actor,
        value_net=value,
        importance_ratio_clipping=importance_ratio_clipping,
        entropy_regularization=entropy_regularization,
        lambda_value=lambda_value,
        discount_factor=discount_factor,
        num_epochs=num_epochs,
        value_pred_loss_coef=value_pred_loss_coef,
        gradient_clipping=gradient_clipping,
        use_gae=True,
        normalize_observations=True,
        normalize_rewards=False,
        train_step_counter=train_step_counter,
    )
    agent.initialize()
    return agent
