"""About the method: what pixel deflection does, its equations, defaults, references and limits."""
import streamlit as st

from pd_core.defence import DefenceConfig
from ui.sidebar import settings as sidebar_settings

sidebar_settings()
paper = DefenceConfig()

st.title("About the method")
st.markdown(
    "This app implements **Deflecting Adversarial Attacks with Pixel Deflection** by Aaditya Prakash, "
    "Nick Moran, Solomon Garber, Antonella DiLillo and James Storer (CVPR 2018). The defence changes the photo "
    "before the classifier sees it; the classifier itself is not retrained or modified.")

st.header("1. The robust activation map (paper §6.1)")
st.markdown("The class activation map (CAM) of class *c* weights the last convolutional feature maps "
            "$f_k$ by the classifier's weights $w_k^c$ for that class:")
st.latex(r"M_c(x, y) = \sum_k w_k^c \, f_k(x, y)")
st.markdown("After an attack the top class is often wrong, but the next few usually still describe the "
            "object. The *robust* map mixes the (min–max normalised) maps of the model's own top-$k$ classes "
            "with halving weights, then divides by its maximum so that it lies in [0, 1]:")
st.latex(r"\widehat{M}(x, y) = \sum_{i=1}^{k} \frac{M_{c_i}(x, y)}{2^i}, \qquad "
         r"R = \widehat{M} / \max \widehat{M}")

st.header("2. Pixel deflection (paper §5, Algorithm 1, §8)")
st.markdown("Repeat until $K$ values have been replaced: draw a pixel $p$ and a colour channel uniformly; "
            "with probability $R(p)$ leave it alone (it is on the object); otherwise replace its value by "
            "the same channel's value at a pixel drawn uniformly from the square of half-width $r$ around it:")
st.latex(r"I_p \leftarrow I_q, \qquad q \sim \mathcal{U}\!\left(R_p^{\,r}\right), \qquad "
         r"\Pr[\text{deflect } p] \propto 1 - R(p)")

st.header("3. Wavelet denoising (paper §7)")
st.markdown("The photo is converted to YCbCr, each channel is transformed with a discrete wavelet transform "
            "(db1), and each detail band is *soft-thresholded* — coefficients are shrunk towards zero by "
            "$T$ — with the BayesShrink threshold, which adapts to each band's content:")
st.latex(r"Q(\hat X) = \operatorname{sign}(\hat X)\,\max\!\left(0, |\hat X| - T\right), \qquad "
         r"T_{\text{Bayes}} = \frac{\sigma^2}{\sigma_x}, \quad "
         r"\sigma_x = \sqrt{\max\!\left(\overline{d^2} - \sigma^2, \varepsilon\right)}")
st.markdown("Then the inverse transform, and back to RGB. The whole defence is")
st.latex(r"\operatorname{defend}(x) = \operatorname{denoise}\big(\operatorname{deflect}(x, R(x))\big)")
st.markdown("and **Ens-10** is the majority vote of the classifier over ten independently defended copies "
            "(ties go to the higher mean probability).")

st.header("Defaults (the paper's)")
st.table({
    "parameter": ["deflections K", "window r", "classes in the map k", "σ", "wavelet", "threshold",
                  "thresholding", "colour space"],
    "value": [str(v) for v in (paper.deflections, paper.window, paper.top_k, paper.sigma, paper.wavelet,
                               "BayesShrink", paper.mode, "YCbCr" if paper.ycbcr else "RGB")],
    "meaning": ["pixel values replaced per image", "neighbour drawn within r pixels (a 21×21 square)",
                "top classes mixed into the robust map", "noise level removed, per normalised channel",
                "Daubechies-1 (Haar)", "adaptive per wavelet band", "shrink every coefficient",
                "denoise brightness and colour separately"],
})
st.caption("σ is in the units of each YCbCr channel rescaled to [0, 1], as in scikit-image 0.13/0.14 which "
           "produced the paper's numbers (today's scikit-image rescales σ and would barely denoise).")

st.header("The limits — read this")
st.markdown(
    "- **An attacker who knows about the defence defeats it.** Athalye & Carlini (2018) attacked pixel "
    "deflection with BPDA (the defence's gradient replaced by the identity) and EOT (averaging over the "
    "defence's randomness): with changes of at most **4/255** per pixel value, the defended classifier's "
    "accuracy fell to **0%**. The defence helps against attacks made *without* knowing it, not against an "
    "adaptive adversary.\n"
    "- **The figures depend on the classifier.** The paper used ResNet-50; this app's embedded classifier is "
    "EfficientNet-Lite0, on which the defence recovers fewer attacked photos and keeps fewer clean ones. "
    "The measured figures of this implementation, on this model, are in `docs/results.md` of the project; "
    "they were measured, not copied from the paper, and the defence was not retuned to chase the paper's "
    "numbers.\n"
    "- **Randomness.** A single defended run can go either way; Ens-10 is steadier. Every number shown here "
    "depends on the seed in the sidebar, and the same seed reproduces it.")

st.header("References")
st.markdown(
    "1. A. Prakash, N. Moran, S. Garber, A. DiLillo, J. Storer. *Deflecting Adversarial Attacks with Pixel "
    "Deflection.* CVPR 2018. arXiv:1801.08926.\n"
    "2. A. Athalye, N. Carlini. *On the Robustness of the CVPR 2018 White-Box Adversarial Example Defenses.* "
    "2018. arXiv:1804.03286.\n"
    "3. B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba. *Learning Deep Features for Discriminative "
    "Localization* (CAM). CVPR 2016.\n"
    "4. S. G. Chang, B. Yu, M. Vetterli. *Adaptive Wavelet Thresholding for Image Denoising and Compression* "
    "(BayesShrink). IEEE TIP 2000.\n"
    "5. I. Goodfellow, J. Shlens, C. Szegedy. *Explaining and Harnessing Adversarial Examples* (FGSM). ICLR 2015.\n"
    "6. J. Rauber, R. Zimmermann, M. Bethge, W. Brendel. *Foolbox Native.* JOSS 2020 (the attacks).")
