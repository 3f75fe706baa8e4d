//! Adam (Kingma & Ba) with bias correction, over the four parameter tensors of an [`Mlp`].

use crate::mlp::Mlp;

pub(crate) struct Adam {
    m: Mlp,
    v: Mlp,
    t: i32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

impl Adam {
    pub fn new(like: &Mlp) -> Self {
        Adam {
            m: like.zeros_like(),
            v: like.zeros_like(),
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    pub fn step(&mut self, net: &mut Mlp, grad: &mut Mlp, lr: f32) {
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        let step = lr * c2.sqrt() / c1;
        let params = net.params_mut();
        let grads = grad.params_mut();
        let ms = self.m.params_mut();
        let vs = self.v.params_mut();
        for (((p, g), m), v) in params.into_iter().zip(grads).zip(ms).zip(vs) {
            for (((p, g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step * *m / (v.sqrt() + eps * c2.sqrt());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn first_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        // With bias correction the first Adam step is lr·sign(g) (up to eps).
        let mut rng = Rng::new(1);
        let mut net = Mlp::random(3, 2, 4, vec![0.0; 4], &mut rng);
        let before = net.clone();
        let mut grad = net.zeros_like();
        for p in grad.params_mut() {
            p.iter_mut().for_each(|g| *g = rng.normal() as f32);
        }
        let mut adam = Adam::new(&net);
        adam.step(&mut net, &mut grad, 0.01);
        let mut before = before;
        for ((p, b), g) in net
            .params_mut()
            .iter()
            .zip(before.params_mut())
            .zip(grad.params_mut())
        {
            for ((p, b), g) in p.iter().zip(b.iter()).zip(g.iter()) {
                assert!((b - p - 0.01 * g.signum()).abs() < 1e-6);
            }
        }
    }
}
