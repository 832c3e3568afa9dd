"""Custom Keras layers of the model zoo (imports Keras; loading a saved model needs them registered)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mgmt")
class BatchNorm(layers.BatchNormalization):
    """Batch normalisation whose scale is ``gamma / sqrt(variance + epsilon)``, computed exactly.

    Keras's layer computes ``rsqrt``, which TensorFlow's CPU kernel takes from the processor's
    approximate reciprocal-square-root instruction: its last bits differ between Intel and AMD,
    so a model with batch normalisation trained differently on each. Square root and division
    are exact (IEEE) everywhere. Channels last, no mask, no renormalisation.
    """

    def call(self, inputs, training=None):
        if training and self.trainable:
            mean, variance = ops.moments(inputs, axes=self._reduction_axes)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
            scale = self.gamma / ops.sqrt(variance + self.epsilon)
        else:
            # The same IEEE division, as divide_no_nan (the root is positive): TensorFlow's graph
            # optimiser rewrites x / sqrt(y) into x * rsqrt(y) wherever the root has no other use,
            # as here (in training the gradient uses it), and rsqrt is the approximate instruction
            scale = ops.divide_no_nan(self.gamma, ops.sqrt(self.moving_variance + self.epsilon))
            mean = self.moving_mean
        return inputs * scale + (self.beta - mean * scale)
