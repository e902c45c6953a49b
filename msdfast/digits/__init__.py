"""The digits world: a real latent-diffusion model in Stable Diffusion's folder format, trained by msdfast on
scikit-learn's bundled handwritten digits, its independent evaluation classifier, and the image-domain study.

* `data`: the digits (8x8, 10 classes, inside scikit-learn's wheel), the fixed train / held-out split, the
  upsampled [N, 32, 32] images in [0, 1] with ink high.
* `model`: the SD-format folder (AutoencoderKL, CLIPTextModel + CLIPTokenizer, UNet2DConditionModel, DDIM
  scheduler config) and the prompts; `digits_model_path()` is the shipped folder (`--model digits`).
* `train`: `msdfast digits train` (VAE, then UNet + text encoder with classifier-free dropout).
* `classifier` / `metrics`: the evaluation (accuracy, confidence, k-NN precision / recall, Frechet distance,
  diversity on the classifier's penultimate features).
* `study`: `msdfast digits` (every estimator through msdfast's image pipeline).
"""
