"""Every Keras class dltoolkit saves inside model.keras, registered for loading.

`import dltoolkit` imports this package as soon as Keras is imported (a post-import hook),
so `keras.saving.load_model("runs/<name>/model.keras")` works after `import dltoolkit`
alone. The preprocessing layers (scalers, encoders, tokenizers) are the modules of this
package; the model classes live in `dltoolkit.models`.
"""

import importlib
import pkgutil

MODEL_MODULES = (
    "dltoolkit.core.optim",
    "dltoolkit.models.autoencoder",
    "dltoolkit.models.detection",
    "dltoolkit.models.diffusion",
    "dltoolkit.models.generative",
    "dltoolkit.models.gpt",
    "dltoolkit.models.graph",
    "dltoolkit.models.hub_speech",
    "dltoolkit.models.hub_text",
    "dltoolkit.models.language_model",
    "dltoolkit.models.policy",
    "dltoolkit.models.segmentation",
    "dltoolkit.models.seq2seq",
    "dltoolkit.models.sequence",
    "dltoolkit.models.speech",
    "dltoolkit.models.text_classification",
    "dltoolkit.models.transcription",
    "dltoolkit.models.vision",
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
for _module in MODEL_MODULES:
    importlib.import_module(_module)
