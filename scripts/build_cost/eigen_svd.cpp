// build_cost: Eigen's BDCSVD<MatrixXf> plus SelfAdjointEigenSolver<MatrixXd>, no lqer.
#include <Eigen/Dense>

Eigen::VectorXf run(const Eigen::MatrixXf& m, const Eigen::MatrixXd& r) {
  const Eigen::BDCSVD<Eigen::MatrixXf> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(r);
  return svd.singularValues() + eig.eigenvalues().head(svd.singularValues().size()).cast<float>();
}
